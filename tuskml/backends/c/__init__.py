"""The ``c`` engine backend: a C99 kernel library, a code generator and a host builder.

See README.md in this folder for the kernels, the block run-length layout in C and the layout of a
generated project. Importing this package imports no torch.
"""

from tuskml.core.cli import main

main()

"""`tuskml demo`: both plugin families end to end in one command, on embedded defaults."""

from emogen_cli.cli import main

main()

from faultplane.cli.main import main

main()

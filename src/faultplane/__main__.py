from faultplane.cli import main

main()

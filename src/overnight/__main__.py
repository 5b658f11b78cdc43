from overnight.cli.app import main

main()

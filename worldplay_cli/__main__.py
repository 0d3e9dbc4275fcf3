from worldplay_cli.app import main

main()

from worldplay_cli.console import run

run()

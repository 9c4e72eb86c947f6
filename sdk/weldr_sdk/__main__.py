from weldr_sdk.cli import main

main()

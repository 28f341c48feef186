from salrun.cli import main

main()

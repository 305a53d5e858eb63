from xcr0tool.cli.main import main

main()

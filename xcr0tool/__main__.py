from xcr0tool.cli import main

main()

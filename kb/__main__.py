from kb.serve.cli import main

main()

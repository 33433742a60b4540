from neuroq.cli import main

main()

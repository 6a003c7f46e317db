from chargegraph.cli import main

main()

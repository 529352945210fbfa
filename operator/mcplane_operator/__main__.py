from mcplane_operator.cli import main

main()

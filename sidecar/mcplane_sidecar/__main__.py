from mcplane_sidecar.cli import main

main()

from jitbroker.cli import main

main()

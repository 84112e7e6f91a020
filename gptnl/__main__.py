from gptnl.cli import main

main()

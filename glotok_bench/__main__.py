from glotok_bench.cli import main

main()

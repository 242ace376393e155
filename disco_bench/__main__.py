from disco_bench.cli import main

if __name__ == "__main__":  # a spawned step process imports this module too
    raise SystemExit(main())

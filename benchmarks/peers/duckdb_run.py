"""Run the six rules ported to DuckDB SQL over a Kubernetes audit JSON-lines file.

    python duckdb_run.py FILE

Prints the matches of each rule, one `rule count` line each, sorted by rule id,
then a `total` line. DuckDB runs on one thread (SET threads=1), as
`vigil replay` does on its single pinned core.
"""

import pathlib
import sys

import duckdb


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: duckdb_run.py FILE")
    path = sys.argv[1]
    sql = (pathlib.Path(__file__).parent / "duckdb_six_rules.sql").read_text()
    sql = sql.replace("{input}", "'" + path.replace("'", "''") + "'")
    con = duckdb.connect()
    con.execute("SET threads = 1")
    cur = con.execute(sql)
    names = [d[0] for d in cur.description]
    row = cur.fetchone()
    total = 0
    for name, count in sorted(zip(names, row)):
        print(f"{name} {count}")
        total += count
    print(f"total {total}")


if __name__ == "__main__":
    main()

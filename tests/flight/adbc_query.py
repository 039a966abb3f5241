"""Queries `tads serve --flight` through ADBC's Flight SQL driver (adbc-driver-flightsql, from
PyPI), as a Python user would; run by tests/it/flight.rs.

    python adbc_query.py URI TOKEN QUERY...

TOKEN may be empty (no authorization header). Each QUERY prints one JSON line: the columns and
rows of its result, or the error the driver raised. The query `!tables` lists the tables that
`adbc_get_objects` sees instead, and `!prepared SQL` runs SQL as a prepared statement.
"""

import json
import sys
import warnings

import adbc_driver_flightsql.dbapi as flightsql


def main() -> None:
    # The driver warns that autocommit cannot be turned off: the server has no transactions.
    warnings.filterwarnings("ignore", message="Cannot disable autocommit")
    uri, token, queries = sys.argv[1], sys.argv[2], sys.argv[3:]
    kwargs = {"adbc.flight.sql.authorization_header": f"Bearer {token}"} if token else {}
    with flightsql.connect(uri, db_kwargs=kwargs) as conn:
        for query in queries:
            try:
                print(json.dumps(run(conn, query), default=str), flush=True)
            except Exception as e:  # the driver's error is what the test checks
                print(json.dumps({"error": " ".join(str(e).split())}), flush=True)


def run(conn, query: str) -> dict:
    if query == "!tables":
        objects = conn.adbc_get_objects(depth="tables").read_all().to_pylist()
        tables = sorted(
            t["table_name"]
            for catalog in objects
            for schema in catalog["catalog_db_schemas"] or []
            for t in schema["db_schema_tables"] or []
        )
        return {"tables": tables}
    with conn.cursor() as cur:
        if query.startswith("!prepared "):
            cur.adbc_prepare(query.removeprefix("!prepared "))
            cur.execute(query.removeprefix("!prepared "))
        else:
            cur.execute(query)
        table = cur.fetch_arrow_table()
    return {"columns": table.column_names, "rows": [list(r.values()) for r in table.to_pylist()]}


if __name__ == "__main__":
    main()

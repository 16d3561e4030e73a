"""The central hub's collector: every clinic's results and health in one database.

    broker ($share/<group>/{prefix}/+/+/results, .../events; {prefix}/+/+/health, .../status)
        -> collector (decode and validate, batch, commit, then acknowledge)
        -> database (SQLite by default, PostgreSQL by URL)
        <- operator queries: ``edge hub devices``, ``results``, ``gaps``

This package is the hub's, never the appliance's: nothing outside ``edge/hub/``
imports it except the lazily loaded ``edge hub`` sub-command. It needs the
``hub`` extra (SQLAlchemy, jsonschema; psycopg for PostgreSQL).
"""

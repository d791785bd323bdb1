"""PostgreSQL adapters: raw psycopg SQL over one ``AsyncConnectionPool``."""

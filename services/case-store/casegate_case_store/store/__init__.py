"""PostgreSQL: the pool, the repositories, the outbox and the migrations."""

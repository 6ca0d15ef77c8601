-- PEM of the CA that signed a target's certificate (tls_mode verify-full).
ALTER TABLE resources ADD COLUMN tls_ca TEXT NOT NULL DEFAULT '';

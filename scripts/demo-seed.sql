-- Demo data for `make run`: a customers table full of fake PII.
CREATE ROLE sluice_demo LOGIN PASSWORD :'pw';
CREATE DATABASE demo OWNER sluice_demo;
\connect demo
SET ROLE sluice_demo;
CREATE TABLE customers (
    id          serial PRIMARY KEY,
    name        text NOT NULL,
    email       text NOT NULL,
    card_number text NOT NULL,
    phone       text,
    created_at  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO customers (name, email, card_number, phone) VALUES
    ('Ada Lovelace',     'ada@example.com',     '4111 1111 1111 1111', '+44 20 7946 0018'),
    ('Grace Hopper',     'grace@example.org',   '5500 0000 0000 0004', '+1 202 555 0143'),
    ('Alan Turing',      'alan@example.net',    '3400 000000 00009',   '+44 161 496 0735'),
    ('Katherine Johnson','kj@example.com',      '6011 0000 0000 0004', '+1 757 555 0199'),
    ('Edsger Dijkstra',  'edsger@example.nl',   '3056 9309 0259 04',   '+31 20 555 0102');
CREATE TABLE orders (
    id          serial PRIMARY KEY,
    customer_id int NOT NULL REFERENCES customers(id),
    total_cents int NOT NULL,
    placed_at   timestamptz NOT NULL DEFAULT now()
);
INSERT INTO orders (customer_id, total_cents) SELECT (i % 5) + 1, i * 137 FROM generate_series(1, 50) AS i;

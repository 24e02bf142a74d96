-- depends_on: {{ ref('customer_model') }}
-- Realistic customers that do not exist, e.g. for a test environment.
select * from synthesize_rows('customers', 1000, seed := 7)

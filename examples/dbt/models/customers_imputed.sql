-- depends_on: {{ ref('customer_model') }}
-- Every NULL filled; every other value, every row and the row order as they were.
select * from impute_latent_diffusion('{{ ref("raw_customers") }}', model := 'customers', seed := 7)

-- A raw customer table with gaps, as exports often are: age, income and segment are
-- missing for some customers. Generated deterministically so the example needs no files.
with base as (
    select
        range as customer_id,
        (hash(range, 'age') % 10000) / 10000.0 as u_age,
        (hash(range, 'income') % 10000) / 10000.0 as u_income,
        (hash(range, 'gap') % 100) as u_gap
    from range(1500)
)
select
    customer_id,
    case when u_gap < 10 then null else cast(round(18 + 60 * u_age) as integer) end as age,
    case when u_gap between 10 and 21 then null
         else round(15000 + 900 * (18 + 60 * u_age) + 40000 * u_income, 2) end as income,
    case when u_gap between 22 and 29 then null
         when u_age < 0.15 then 'student'
         when u_income > 0.7 then 'premium'
         else 'standard' end as segment,
    case when u_income > 0.5 then 'city' else 'suburb' end as region
from base

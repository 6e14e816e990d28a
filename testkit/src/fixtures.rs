//! Small builders, so test objects read like sentences.

use reserve_operator::crd::{Customer, CustomerSpec, Order, OrderSpec, OrderState};

/// A Customer named `name`, displayed as "Customer <name>" (cut to the 128 characters a
/// display name may have).
pub fn customer(name: &str) -> Customer {
    let display: String = format!("Customer {name}").chars().take(128).collect();
    Customer::new(
        name,
        CustomerSpec {
            display_name: Some(display),
        },
    )
}

/// An Order of `quantity` coffees for `customer`, in `state`.
pub fn order(name: &str, customer: &str, quantity: i32, state: OrderState) -> Order {
    Order::new(
        name,
        OrderSpec {
            customer: customer.into(),
            product: ["Americano", "Latte", "Flat White", "Mocha"]
                [quantity.unsigned_abs() as usize % 4]
                .into(),
            quantity,
            state,
        },
    )
}

//! Template sentences and value pools for the sensitive corpora.
//!
//! The evaluation and training sides use different templates, names, cities and
//! diagnoses, so the probe is scored on text it never saw (corpus disjointness test in
//! `corpus.rs`). Placeholders are `{kind}` with kind one of the [`FieldKind`] names.

use crate::corpus::FieldKind;

/// The templates and pools of one side (evaluation or training).
pub(crate) struct Pools {
    pub templates: &'static [&'static str],
    pub first_names: &'static [&'static str],
    pub last_names: &'static [&'static str],
    pub diagnoses: &'static [&'static str],
    pub cities: &'static [&'static str],
    /// `true`: dates as "14 March 1962"; `false`: as "March 14, 1962".
    pub day_first: bool,
    /// Currency symbols for amounts.
    pub currencies: &'static [&'static str],
}

pub(crate) const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

pub(crate) const EVAL: Pools = Pools {
    templates: &[
        "Patient {name}, born {date}, was diagnosed with {diagnosis}.",
        "Transfer {amount} from account {account} to {name} before Friday.",
        "Please call {name} at {phone} about the biopsy results.",
        "{name} was admitted on {date} with suspected {diagnosis}.",
        "The invoice for {amount} was paid from account {account} on {date}.",
        "My name is {name}, I live in {city} and my phone number is {phone}.",
        "Dr. {name} confirmed that the patient has {diagnosis} and prescribed rest.",
        "Wire {amount} to account {account} held by {name} in {city}.",
    ],
    first_names: &[
        "Maria",
        "Thomas",
        "Aisha",
        "Jonas",
        "Elena",
        "Rahul",
        "Sofia",
        "Daniel",
        "Mei",
        "Lukas",
        "Fatima",
        "Pedro",
        "Ingrid",
        "Kwame",
        "Hannah",
        "Oleksandr",
    ],
    last_names: &[
        "Keller",
        "Novak",
        "Haddad",
        "Lindqvist",
        "Moreau",
        "Sharma",
        "Rossi",
        "Fischer",
        "Chen",
        "Becker",
        "Okafor",
        "Almeida",
        "Johansson",
        "Mensah",
        "Weber",
        "Kowalski",
    ],
    diagnoses: &[
        "type 2 diabetes",
        "hypertension",
        "asthma",
        "chronic kidney disease",
        "major depressive disorder",
        "atrial fibrillation",
        "rheumatoid arthritis",
        "hepatitis C",
        "multiple sclerosis",
        "Crohn's disease",
        "migraine",
        "hypothyroidism",
    ],
    cities: &[
        "Zurich",
        "Lyon",
        "Porto",
        "Krakow",
        "Gothenburg",
        "Leeds",
        "Bologna",
        "Rotterdam",
    ],
    day_first: true,
    currencies: &["$"],
};

pub(crate) const TRAIN: Pools = Pools {
    templates: &[
        "{name} visited the clinic on {date} and was treated for {diagnosis}.",
        "Send {amount} to {name} using account number {account}.",
        "Contact {name} in {city} by phone at {phone}.",
        "The bank statement of {name} shows a payment of {amount} on {date}.",
        "Diagnosis for {name}: {diagnosis}, first noted on {date}.",
        "Account {account} received {amount} from {name} last month.",
        "Our records show that {name} from {city} has {diagnosis}.",
    ],
    first_names: &[
        "James", "Olivia", "Ahmed", "Clara", "Victor", "Priya", "Mateo", "Greta", "Yusuf", "Nina",
        "Samuel", "Leila", "Anton", "Rosa", "Kenji", "Beatriz",
    ],
    last_names: &[
        "Morgan", "Dubois", "Nakamura", "Schmidt", "Petrov", "Garcia", "Hansen", "Ali", "Costa",
        "Brennan", "Varga", "Ibrahim", "Walsh", "Tanaka", "Silva", "Meyer",
    ],
    diagnoses: &[
        "pneumonia",
        "epilepsy",
        "osteoporosis",
        "celiac disease",
        "psoriasis",
        "bronchitis",
        "gout",
        "anemia",
        "glaucoma",
        "Lyme disease",
        "lupus",
        "tuberculosis",
    ],
    cities: &[
        "Vienna", "Seville", "Dublin", "Tampere", "Ghent", "Brno", "Bergen", "Turin",
    ],
    day_first: false,
    currencies: &["$", "€", "£"],
};

/// Maps a placeholder name to its field kind.
pub(crate) fn kind_of(placeholder: &str) -> Option<FieldKind> {
    Some(match placeholder {
        "name" => FieldKind::Name,
        "date" => FieldKind::Date,
        "diagnosis" => FieldKind::Diagnosis,
        "account" => FieldKind::Account,
        "amount" => FieldKind::Amount,
        "phone" => FieldKind::Phone,
        "city" => FieldKind::City,
        _ => return None,
    })
}

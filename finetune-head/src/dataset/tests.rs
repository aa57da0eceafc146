use super::*;

fn item(origin: &str, label: &str, content: &[u8]) -> Item {
    Item {
        origin: origin.into(),
        label: label.into(),
        hash: sha256(&[content]),
        input: Input::Tensor(vec![]),
        split: None,
    }
}

#[test]
fn clean_drops_duplicates_and_conflicts() {
    let items = vec![
        item("a1", "a", b"x"),
        item("a2", "a", b"x"),
        item("b1", "b", b"y"),
        item("a3", "a", b"y"),
        item("a4", "a", b"z"),
    ];
    let (kept, report) = clean(items);
    let kept: Vec<_> = kept.iter().map(|i| i.origin.as_str()).collect();
    assert_eq!(kept, ["a1", "a4"]);
    assert_eq!(report.duplicates.len(), 1);
    assert_eq!(report.duplicates[0].kept, "a1");
    assert_eq!(report.duplicates[0].dropped, ["a2"]);
    assert_eq!(report.conflicts.len(), 1);
    assert_eq!(report.conflicts[0].items.len(), 2);
}

#[test]
fn split_is_stratified_deterministic_and_names_small_classes() {
    let mut items: Vec<Item> = (0..100)
        .map(|i| {
            item(
                &i.to_string(),
                if i < 80 { "big" } else { "small" },
                &[i as u8],
            )
        })
        .collect();
    let classes = class_names(&items);
    split(&mut items, &classes, 0.15, 0.15, 7).unwrap();
    let count = |l: &str, s| {
        items
            .iter()
            .filter(|i| i.label == l && i.split == Some(s))
            .count()
    };
    assert_eq!(
        (
            count("big", Split::Test),
            count("big", Split::Val),
            count("big", Split::Train)
        ),
        (12, 12, 56)
    );
    assert_eq!(
        (count("small", Split::Test), count("small", Split::Val)),
        (3, 3)
    );
    let again = {
        let mut it = items.clone();
        it.iter_mut().for_each(|i| i.split = None);
        split(&mut it, &classes, 0.15, 0.15, 7).unwrap();
        it
    };
    assert_eq!(again, items);
    // Extreme fractions still leave every part a sample.
    let mut three: Vec<Item> = (0..3)
        .map(|i| item(&i.to_string(), "c", &[i as u8]))
        .collect();
    split(&mut three, &["c".into()], 0.05, 0.9, 1).unwrap();
    for s in [Split::Train, Split::Val, Split::Test] {
        assert_eq!(three.iter().filter(|i| i.split == Some(s)).count(), 1);
    }
    let mut two = vec![item("x", "lonely", b"1"), item("y", "lonely", b"2")];
    let err = split(&mut two, &["lonely".into()], 0.15, 0.15, 1)
        .unwrap_err()
        .to_string();
    assert!(err.contains("class \"lonely\" has 2 samples"), "{err}");
}

#[test]
fn numeric_class_names_sort_as_numbers() {
    let items = [item("", "10", b""), item("", "9", b""), item("", "2", b"")];
    assert_eq!(class_names(&items), ["2", "9", "10"]);
}

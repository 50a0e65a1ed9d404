use std::path::Path;
use std::time::Duration;

use super::plan::*;
use super::transfer::*;
use crate::config::Account;
use crate::pop3::{MsgNum, Uidl};
use crate::state::AccountState;

#[test]
fn message_id_is_found_unfolded_in_the_header_only() {
    let m = b"From: a\nMessage-ID:\n <abc@x.example>\nSubject: s\n\nMessage-ID: <body@x>\n";
    assert_eq!(message_id(m).as_deref(), Some(&b"<abc@x.example>"[..]));
    let m = b"message-id:   <Q@Y>  \n\nbody\n";
    assert_eq!(message_id(m).as_deref(), Some(&b"<Q@Y>"[..]));
    assert_eq!(message_id(b"Subject: x\n\nMessage-ID: <body@x>\n"), None);
    assert_eq!(message_id(b"Message-ID:\n\n"), None);
    assert_eq!(message_id(b""), None);
    let d = message_id_digest(b"<abc@x.example>");
    assert_eq!(d.len(), 32);
    assert!(d.bytes().all(|b| b.is_ascii_hexdigit()));
}

#[test]
fn far_short_needs_half_the_list_size_and_64_kib_missing() {
    // The case: listed at 100,000 octets, 2 KB arrived.
    assert!(far_short(2_000, 100_000));
    // Exact, LF-counted (less than what arrives CRLF-counted), over-reported a little.
    assert!(!far_short(100_000, 100_000));
    assert!(!far_short(102_000, 100_000));
    assert!(!far_short(70_000, 100_000));
    // Small messages: any shortfall up to 64 KiB passes (overheads, estimates).
    assert!(!far_short(500, 30_000));
    assert!(!far_short(0, 65_536));
    assert!(far_short(0, 65_537));
    // Large ones: more than half missing.
    assert!(!far_short(5 << 20, 10 << 20));
    assert!(far_short((5 << 20) - 1, 10 << 20));
    assert!(far_short(1_000, u64::MAX));
    assert!(!far_short(u64::MAX, 0));
}

#[test]
fn wire_len_counts_crlf_line_endings() {
    assert_eq!(wire_len(b""), 0);
    assert_eq!(wire_len(b"a\n"), 3);
    assert_eq!(wire_len(b"Subject: x\n\nbody\n"), 20);
    assert_eq!(wire_len(b"no newline"), 10);
}

fn items(sizes: &[u64]) -> Vec<Item> {
    sizes
        .iter()
        .enumerate()
        .map(|(i, &listed)| Item {
            num: MsgNum::parse(format!("{}", i + 1).as_bytes()).unwrap(),
            uidl: None,
            listed,
            quarantine: false,
            message_id: None,
        })
        .collect()
}

fn test_account(keep: bool, delete_after: Option<Duration>) -> Account {
    let mut a = crate::config::parse(
        Path::new("/c.toml"),
        "[[account]]\nname='a'\nhost='h'\nuser='u'\npassword_file='p'\n\
         deliver={maildir='/m'}\n",
    )
    .unwrap()
    .accounts[0]
        .as_ref()
        .clone();
    a.keep = keep;
    a.delete_after = delete_after;
    a
}

fn num(n: u32) -> MsgNum {
    MsgNum::new(n).unwrap()
}

fn uidl(s: &str) -> Uidl {
    Uidl::parse(s.as_bytes()).unwrap()
}

#[test]
fn a_huge_listing_of_new_messages_takes_a_bounded_slice_in_server_order() {
    let dir = tempfile::tempdir().unwrap();
    let state = AccountState::open(
        dir.path(),
        &crate::state::Mailbox::new("pop.example.org", 995, "a"),
        "a",
    )
    .unwrap();
    let account = test_account(true, None);
    for (len, n) in [(70, 300_000u32), (8, 150_000)] {
        let mut plan = Plan::new(&account, &state, 0);
        for i in 1..=n {
            let mut u = format!("u{i}-");
            while u.len() < len {
                u.push('x');
            }
            plan.uidl(num(i), &uidl(&u)).unwrap();
        }
        let taken = plan.todo.len();
        assert!(taken > 1000 && taken <= TAKE_MAX, "{len}: {taken}");
        assert!(plan.taken_cost <= TAKE_BUDGET);
        assert_eq!(plan.over_budget, n as usize - taken);
        assert_eq!(plan.on_server, n as usize);
        assert!(plan.sorted);
        assert!(
            plan.todo
                .iter()
                .zip(1..)
                .all(|(item, i)| item.num == num(i))
        );
    }
    // Without UIDL the same budget holds.
    let mut plan = Plan::new(&account, &state, 0);
    for i in 1..=200_000 {
        plan.list(num(i), 1000).unwrap();
    }
    assert_eq!(plan.todo.len() + plan.over_budget, 200_000);
    assert!(plan.todo.len() <= TAKE_MAX);
}

#[test]
fn delivered_messages_due_for_dele_are_held_by_number_only() {
    let dir = tempfile::tempdir().unwrap();
    let mut state = AccountState::open(
        dir.path(),
        &crate::state::Mailbox::new("pop.example.org", 995, "a"),
        "a",
    )
    .unwrap();
    state.record_delivered(&uidl("a"));
    state.record_delivered_at(&uidl("b"), 1);
    state.record_held(&uidl("h"));
    state.record_oversize(&uidl("o"));
    let listing = [(1, "a"), (2, "new"), (3, "b"), (4, "h"), (5, "o")];
    let run = |account: &Account| {
        let mut plan = Plan::new(account, &state, crate::state::now_secs());
        for (n, u) in listing {
            plan.uidl(num(n), &uidl(u)).unwrap();
        }
        let dele: Vec<_> = plan
            .dele_wait
            .iter()
            .map(|(n, u)| (n.get(), u.clone()))
            .collect();
        let todo: Vec<_> = plan.todo.iter().map(|i| i.num.get()).collect();
        (
            dele,
            todo,
            plan.held,
            plan.expired,
            plan.known.len(),
            plan.taken_cost,
        )
    };
    // Delete mode: both delivered ones are deleted; the one over max_size before is looked
    // at again (its size may fit now) without taking from the budget.
    let (dele, todo, held, expired, known, cost) = run(&test_account(false, None));
    assert_eq!(dele, [(1, None), (3, None)]);
    assert_eq!(todo, [2, 5]);
    assert_eq!((held, expired, known), (1, 0, 4));
    assert_eq!(cost, 3 + TAKE_OVERHEAD);
    // Keep mode: only the one past delete_after.
    let (dele, todo, _, expired, _, _) = run(&test_account(true, Some(Duration::from_secs(3600))));
    assert_eq!(dele, [(3, None)]);
    assert_eq!(todo, [2, 5]);
    assert_eq!(expired, 1);
    let (dele, ..) = run(&test_account(true, None));
    assert!(dele.is_empty());
}

#[test]
fn a_uidl_listed_twice_is_refused_when_it_is_acted_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut state = AccountState::open(
        dir.path(),
        &crate::state::Mailbox::new("pop.example.org", 995, "a"),
        "a",
    )
    .unwrap();
    state.record_delivered(&uidl("old"));
    let account = test_account(false, None);
    for listing in [
        [(1, "old"), (2, "x"), (3, "old")],
        [(1, "y"), (2, "x"), (3, "x")],
    ] {
        let mut plan = Plan::new(&account, &state, 0);
        let r: Result<Vec<()>, _> = listing
            .iter()
            .map(|&(n, u)| plan.uidl(num(n), &uidl(u)))
            .collect();
        let e = r.and_then(|_| plan.finish()).unwrap_err().to_string();
        assert!(e.contains("listed twice") && e.contains('3'), "{e}");
    }
    let mut plan = Plan::new(&account, &state, 0);
    plan.uidl(num(2), &uidl("old")).unwrap();
    plan.finish().unwrap();
    let h = plan.known[0].0;
    assert_eq!(Plan::known_as(&plan.known, h), Some(num(2)));
    assert_eq!(Plan::known_as(&plan.known, h ^ 1), None);
    // Out of order, the plan is sorted before the sizes are matched.
    let mut plan = Plan::new(&account, &state, 0);
    for (n, u) in [(3, "c"), (1, "a"), (2, "b")] {
        plan.uidl(num(n), &uidl(u)).unwrap();
    }
    assert!(!plan.sorted);
    plan.sort();
    let nums: Vec<u32> = plan.todo.iter().map(|i| i.num.get()).collect();
    assert_eq!(nums, [1, 2, 3]);
}

#[test]
fn per_poll_limits_keep_server_order_and_always_fetch_one() {
    let account = |count, bytes| {
        let mut a = crate::config::parse(
            Path::new("/c.toml"),
            "[[account]]\nname='a'\nhost='h'\nuser='u'\npassword_file='p'\n\
             deliver={maildir='/m'}\n",
        )
        .unwrap()
        .accounts[0]
            .as_ref()
            .clone();
        a.max_messages_per_poll = count;
        a.max_bytes_per_poll = bytes;
        a
    };
    let mut t = items(&[10, 20, 30, 40]);
    assert_eq!(limit_poll(&account(None, None), &mut t), 0);
    assert_eq!(t.len(), 4);
    let mut t = items(&[10, 20, 30, 40]);
    assert_eq!(limit_poll(&account(Some(3), None), &mut t), 1);
    assert_eq!(t.iter().map(|i| i.listed).collect::<Vec<_>>(), [10, 20, 30]);
    let mut t = items(&[10, 20, 30, 40]);
    assert_eq!(limit_poll(&account(None, Some(35)), &mut t), 2);
    assert_eq!(t.len(), 2);
    // A message over the byte limit still goes, alone.
    let mut t = items(&[100, 1]);
    assert_eq!(limit_poll(&account(Some(5), Some(50)), &mut t), 1);
    assert_eq!(t[0].listed, 100);
}

/// A fresh journal in a temporary directory.
fn journal() -> (tempfile::TempDir, AccountState) {
    let dir = tempfile::tempdir().unwrap();
    let state = AccountState::open(
        dir.path(),
        &crate::state::Mailbox::new("pop.example.org", 995, "a"),
        "a",
    )
    .unwrap();
    (dir, state)
}

/// DELEs owed, as (message number, UIDL).
type Dele = Vec<(u32, Option<String>)>;

/// What the plan decides for a UIDL listing (number, UIDL, LIST size) at time `now`, as
/// `poll` works it out, without a socket: (numbers to fetch, DELEs owed as (number, UIDL),
/// the report's counts).
fn plan_of(
    account: &Account,
    state: &mut AccountState,
    now: u64,
    listing: &[(u32, &str, u64)],
) -> (Vec<u32>, Dele, crate::report::Report) {
    let mut report = crate::report::Report::default();
    let mut plan = Plan::new(account, state, now);
    for &(n, u, _) in listing {
        plan.uidl(num(n), &uidl(u)).unwrap();
    }
    plan.finish().unwrap();
    plan.sort();
    for &(n, _, size) in listing {
        plan.size(num(n), size);
    }
    let mut work = plan.into_work(&mut report);
    work.limit(account, state, &mut report);
    let todo = work.todo.iter().map(|i| i.num.get()).collect();
    let dele = work
        .dele_wait
        .iter()
        .map(|(n, u)| (n.get(), u.as_ref().map(|u| u.as_str().to_string())))
        .collect();
    (todo, dele, report)
}

#[test]
fn plan_in_keep_mode_fetches_the_new_and_deletes_nothing() {
    let (_dir, mut state) = journal();
    state.record_delivered(&uidl("a"));
    state.record_delivered_at(&uidl("b"), 1);
    let account = test_account(true, None);
    let listing = [(1, "a", 10), (2, "n1", 20), (3, "b", 30), (4, "n2", 40)];
    let (todo, dele, report) = plan_of(&account, &mut state, 1_000_000, &listing);
    assert_eq!(todo, [2, 4]);
    assert!(dele.is_empty());
    assert_eq!(
        (report.on_server, report.new, report.expired, report.held),
        (4, 2, 0, 0)
    );
    assert_eq!((report.deferred, report.waiting()), (0, 0));
}

#[test]
fn plan_in_delete_mode_deletes_every_delivered_message() {
    let (_dir, mut state) = journal();
    state.record_delivered(&uidl("a"));
    state.record_delivered_at(&uidl("b"), 1);
    let account = test_account(false, None);
    let listing = [(1, "a", 10), (2, "n1", 20), (3, "b", 30)];
    let (todo, dele, report) = plan_of(&account, &mut state, 1_000_000, &listing);
    assert_eq!(todo, [2]);
    assert_eq!(dele, [(1, None), (3, None)]);
    // Deleting delivered mail in delete mode is not expiry.
    assert_eq!((report.on_server, report.new, report.expired), (3, 1, 0));
}

#[test]
fn plan_with_delete_after_expires_what_was_delivered_that_long_ago() {
    let (_dir, mut state) = journal();
    let now = 100_000;
    state.record_delivered_at(&uidl("old"), now - 3600);
    state.record_delivered_at(&uidl("younger"), now - 3599);
    state.record_delivered_at(&uidl("future"), now + 10);
    let account = test_account(true, Some(Duration::from_secs(3600)));
    let listing = [(1, "younger", 1), (2, "old", 1), (3, "future", 1)];
    let (todo, dele, report) = plan_of(&account, &mut state, now, &listing);
    assert!(todo.is_empty());
    // Exactly `delete_after` old is due; a date ahead of the clock is not.
    assert_eq!(dele, [(2, None)]);
    assert_eq!((report.expired, report.new), (1, 0));
}

#[test]
fn plan_over_max_size_reports_and_keeps_or_deletes_unread() {
    let mut account = test_account(true, None);
    account.max_size = Some(100);
    let listing = [(1, "big", 101), (2, "fits", 100), (3, "huge", u64::MAX)];

    account.max_size_action = crate::config::SizeAction::Keep;
    let (_dir, mut state) = journal();
    let (todo, dele, report) = plan_of(&account, &mut state, 0, &listing);
    assert_eq!(todo, [2]);
    assert!(dele.is_empty());
    assert_eq!((report.too_large, report.too_large_deleted), (2, 0));
    assert_eq!((report.new, report.waiting()), (3, 2));
    assert!(state.is_oversize(&uidl("big")) && state.is_oversize(&uidl("huge")));
    // The next poll looks at them again (a size may change) and still counts them.
    let (todo, _, report) = plan_of(&account, &mut state, 0, &listing);
    assert_eq!(todo, [2]);
    assert_eq!(report.too_large, 2);

    account.max_size_action = crate::config::SizeAction::Delete;
    let (_dir, mut state) = journal();
    let (todo, dele, report) = plan_of(&account, &mut state, 0, &listing);
    assert_eq!(todo, [2]);
    assert_eq!(
        dele,
        [(1, Some("big".to_string())), (3, Some("huge".to_string()))]
    );
    assert_eq!((report.too_large, report.too_large_deleted), (0, 2));
    assert_eq!((report.new, report.waiting()), (1, 0));
    assert!(!state.is_oversize(&uidl("big")));
}

#[test]
fn plan_leaves_held_messages_on_the_server_in_either_mode() {
    for keep in [true, false] {
        let (_dir, mut state) = journal();
        state.record_held(&uidl("h"));
        let account = test_account(keep, Some(Duration::ZERO));
        let listing = [(1, "h", 10), (2, "n", 10)];
        let (todo, dele, report) = plan_of(&account, &mut state, 0, &listing);
        assert_eq!(todo, [2], "keep = {keep}");
        assert!(dele.is_empty(), "keep = {keep}");
        assert_eq!((report.held, report.new, report.expired), (1, 1, 0));
    }
}

#[test]
fn plan_defers_past_the_per_poll_limits_and_the_memory_budget() {
    let (_dir, mut state) = journal();
    let mut account = test_account(true, None);
    account.max_messages_per_poll = Some(2);
    let listing = [
        (1, "a", 1),
        (2, "b", 1),
        (3, "c", 1),
        (4, "d", 1),
        (5, "e", 1),
    ];
    let (todo, _, report) = plan_of(&account, &mut state, 0, &listing);
    assert_eq!(todo, [1, 2]);
    assert_eq!((report.new, report.deferred, report.waiting()), (5, 3, 3));

    account.max_messages_per_poll = None;
    account.max_bytes_per_poll = Some(25);
    let listing = [(1, "a", 10), (2, "b", 10), (3, "c", 10)];
    let (todo, _, report) = plan_of(&account, &mut state, 0, &listing);
    assert_eq!(todo, [1, 2]);
    assert_eq!((report.new, report.deferred), (3, 1));

    // Past TAKE_MAX new messages the rest waits, counted as new and deferred.
    account.max_bytes_per_poll = None;
    let names: Vec<String> = (1..=TAKE_MAX as u32 + 7).map(|i| format!("u{i}")).collect();
    let listing: Vec<(u32, &str, u64)> = names
        .iter()
        .zip(1..)
        .map(|(u, n)| (n, u.as_str(), 1))
        .collect();
    let (todo, _, report) = plan_of(&account, &mut state, 0, &listing);
    assert_eq!(todo.len(), TAKE_MAX);
    assert_eq!(todo.last(), Some(&(TAKE_MAX as u32)));
    assert_eq!((report.new, report.deferred), (TAKE_MAX + 7, 7));
    assert_eq!(report.waiting(), 7);
}

#[test]
fn plan_matches_list_sizes_to_the_messages_taken_only() {
    let (_dir, state) = journal();
    let account = test_account(false, None);
    let mut plan = Plan::new(&account, &state, 0);
    for (n, u) in [(4, "d"), (2, "b")] {
        plan.uidl(num(n), &uidl(u)).unwrap();
    }
    plan.finish().unwrap();
    plan.sort();
    for (n, size) in [(1, 11), (2, 22), (3, 33), (4, 44), (5, 55)] {
        plan.size(num(n), size);
    }
    let sizes: Vec<(u32, u64)> = plan.todo.iter().map(|i| (i.num.get(), i.listed)).collect();
    assert_eq!(sizes, [(2, 22), (4, 44)]);
}

#[test]
fn plan_refuses_a_new_uidl_listed_twice_but_not_two_new_ones() {
    let (_dir, state) = journal();
    let account = test_account(true, None);
    let mut plan = Plan::new(&account, &state, 0);
    plan.uidl(num(1), &uidl("x")).unwrap();
    plan.uidl(num(2), &uidl("y")).unwrap();
    let e = plan.uidl(num(3), &uidl("x")).unwrap_err().to_string();
    assert!(e.contains("listed twice"), "{e}");
}

/// The retrieval window: 1 MiB until a round trip has passed, then twice what arrived per round
/// trip (so it doubles while it is the limit), never above 16 MiB.
#[test]
fn the_window_is_twice_the_bandwidth_delay_product_within_its_bounds() {
    let ms = Duration::from_millis;
    assert_eq!(window_for(0, ms(0), ms(50)), MIN_WINDOW);
    assert_eq!(
        window_for(10 << 20, ms(40), ms(50)),
        MIN_WINDOW,
        "before one RTT"
    );
    // 1 MiB per 50 ms round trip, the window being the limit: it doubles.
    assert_eq!(window_for(2 << 20, ms(100), ms(50)), 2 << 20);
    // 4 MiB in 100 ms at 50 ms: 2 MiB per round trip, window 4 MiB.
    assert_eq!(window_for(4 << 20, ms(100), ms(50)), 4 << 20);
    // A slow link never shrinks it below the floor.
    assert_eq!(window_for(1000, ms(1000), ms(50)), MIN_WINDOW);
    // A fast, distant one is capped.
    assert_eq!(window_for(1 << 30, ms(1000), ms(150)), MAX_WINDOW);
}

proptest::proptest! {
    /// Whatever the numbers, the window stays within its bounds.
    #[test]
    fn the_window_stays_within_its_bounds(read: u64, elapsed in 0u64..1_000_000, rtt in 0u64..100_000) {
        let w = window_for(read, Duration::from_micros(elapsed), Duration::from_micros(rtt));
        proptest::prop_assert!((MIN_WINDOW..=MAX_WINDOW).contains(&w));
    }
}

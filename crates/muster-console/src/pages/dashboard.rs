//! The dashboard: what needs attention, each item linking to the list that shows it; the
//! engine's pause switch; how full the Unix id pools are; the offering-account lifecycle with the
//! number of accounts per state.

use crate::auth::{SecureCookies, Viewer};
use crate::diagram;
use crate::layout::{Layout, render};
use crate::pages::{PageResult, done};
use crate::urls::encode;
use askama::Template;
use axum::Form;
use axum::extract::State;
use axum::response::{IntoResponse, Redirect};
use muster_core::directory::ApprovalStatus;
use muster_core::offering::lifecycle::AccountState;
use muster_core::offering::model::PosixPool;
use muster_directory::SearchInput;
use muster_offerings::AccountFilter;
use muster_server::AppState;
use muster_store::SubscriptionQuery;
use serde::Deserialize;

/// One thing that may need attention.
pub struct Card {
    pub label: String,
    pub count: i64,
    pub href: String,
}

/// Accounts of one provider waiting on the site, or failed.
pub struct ProviderLine {
    pub name: String,
    pub pending: i64,
    pub errors: i64,
    pub pending_href: String,
    pub errors_href: String,
}

/// How full one Unix id pool is.
pub struct PoolLine {
    pub name: String,
    /// "Provider (shared)" or "Offering".
    pub whose: &'static str,
    pub uid: String,
    pub gid: String,
    pub percent: i64,
}

pub struct StateCount {
    pub label: &'static str,
    pub count: i64,
    pub href: String,
}

#[derive(Template)]
#[template(path = "dashboard.html")]
struct DashboardPage {
    layout: Layout,
    super_user: bool,
    cards: Vec<Card>,
    providers: Vec<ProviderLine>,
    pools: Vec<PoolLine>,
    engine_status: String,
    engine_paused: bool,
    running: i64,
    diagram: String,
    states: Vec<StateCount>,
}

const PENDING: [AccountState; 3] = [
    AccountState::Requested,
    AccountState::PendingAccountLinking,
    AccountState::PendingAdditionalValidation,
];
const ERRORS: [AccountState; 2] = [AccountState::ErrorCreating, AccountState::ErrorDeleting];

fn states_href(states: &[AccountState], provider: Option<&str>) -> String {
    let mut q: Vec<String> = states.iter().map(|s| format!("state={}", encode(s.label()))).collect();
    if let Some(p) = provider {
        q.push(format!("provider={p}"));
    }
    format!("/accounts?{}", q.join("&"))
}

/// `GET /`: the dashboard for super-users and provider managers; everyone else lands on Me.
pub async fn page(State(state): State<AppState>, viewer: Viewer) -> PageResult {
    let super_user = viewer.is_super_user();
    if !super_user && viewer.managed_providers == 0 {
        return Ok(Redirect::to("/me").into_response());
    }
    let caller = viewer.caller();
    let mut cards = Vec::new();
    let live = crate::live::url(&state, &viewer, "processes,offering_users").await;
    let (mut engine_status, mut engine_paused, mut running) = (String::new(), false, 0);
    if super_user {
        let counts = state.processes.status_counts(&viewer.auth).await?;
        let n = |status: &str| counts["process_counts"][status].as_i64().unwrap_or(0);
        cards.push(Card {
            label: "Failed processes".into(),
            count: n("failed"),
            href: "/processes?status=failed".into(),
        });
        cards.push(Card {
            label: "Waiting processes".into(),
            count: n("waiting"),
            href: "/processes?status=waiting".into(),
        });
        cards.push(Card {
            label: "Suspended processes (need input)".into(),
            count: n("suspended"),
            href: "/processes?status=suspended".into(),
        });
        let out_of_sync = SubscriptionQuery {
            insync: Some(false),
            limit: 1,
            ..Default::default()
        };
        let (_, total) = state.subscriptions.list(&viewer.auth, &out_of_sync).await?;
        cards.push(Card {
            label: "Out-of-sync subscriptions".into(),
            count: total,
            href: "/subscriptions?tab=all&insync=false".into(),
        });
        let awaiting = SearchInput {
            approval_status: Some(ApprovalStatus::BeforeDecision),
            page: 1,
            page_size: 1,
            ..Default::default()
        };
        let total = state.directory.search_users(&viewer.auth, awaiting).await?.total;
        cards.push(Card {
            label: "Users awaiting approval".into(),
            count: total,
            href: "/users?approval_status=before_decision".into(),
        });
        let locked = SearchInput {
            is_locked: Some(true),
            page: 1,
            page_size: 1,
            ..Default::default()
        };
        let total = state.directory.search_users(&viewer.auth, locked).await?.total;
        cards.push(Card {
            label: "Locked users".into(),
            count: total,
            href: "/users?is_locked=true".into(),
        });
        let mail = state.directory.mail_counts(&viewer.auth).await?;
        cards.push(Card {
            label: "Failed mail deliveries".into(),
            count: mail.iter().find(|(s, _)| s == "failed").map_or(0, |(_, n)| *n),
            href: "/mail?status=failed".into(),
        });
        let status = state.processes.engine_status(&viewer.auth).await?;
        engine_status = status.global_status.to_owned();
        engine_paused = status.global_lock;
        running = status.running_processes;
    }
    let mut providers = Vec::new();
    for p in state.offerings.list_providers(&caller).await? {
        let Ok(uuid) = p.uuid.parse::<uuid::Uuid>() else {
            continue;
        };
        let count = |states: &[AccountState]| AccountFilter {
            states: states.to_vec(),
            provider_uuids: vec![uuid],
            ..Default::default()
        };
        let pending = state.offerings.count_accounts(&caller, &count(&PENDING)).await?;
        let errors = state.offerings.count_accounts(&caller, &count(&ERRORS)).await?;
        providers.push(ProviderLine {
            pending_href: states_href(&PENDING, Some(&p.uuid)),
            errors_href: states_href(&ERRORS, Some(&p.uuid)),
            name: p.name,
            pending,
            errors,
        });
    }
    let pools = state
        .offerings
        .posix_pool_use(&caller)
        .await?
        .into_iter()
        .map(|p| PoolLine {
            whose: match p.pool {
                PosixPool::Provider => "Provider (shared)",
                PosixPool::Offering => "Offering",
            },
            uid: format!("{} of {} ({}–{})", p.uid_used, p.uid_size, p.uid_min, p.uid_max),
            gid: match p.shared_gid {
                Some(g) => format!("shared group {g}"),
                None => format!("{} of {} ({}–{})", p.gid_used, p.gid_size, p.gid_min, p.gid_max),
            },
            percent: p.percent_used,
            name: p.name,
        })
        .collect();
    let mut states = Vec::new();
    for s in AccountState::ALL {
        let f = AccountFilter {
            states: vec![s],
            ..Default::default()
        };
        states.push(StateCount {
            label: s.label(),
            count: state.offerings.count_accounts(&caller, &f).await?,
            href: states_href(&[s], None),
        });
    }
    let diagram = diagram::svg(
        |s| states.iter().find(|c| c.label == s.label()).map_or(0, |c| c.count),
        |s| states_href(&[s], None),
    );
    Ok(render(&DashboardPage {
        layout: Layout::new(&viewer, "Dashboard", "dashboard").live(live),
        super_user,
        cards,
        providers,
        pools,
        engine_status,
        engine_paused,
        running,
        diagram,
        states,
    }))
}

#[derive(Deserialize)]
pub struct EngineForm {
    paused: String,
}

/// `POST /engine`: pauses or resumes the engine.
pub async fn set_engine(
    State(state): State<AppState>,
    SecureCookies(secure): SecureCookies,
    viewer: Viewer,
    Form(f): Form<EngineForm>,
) -> PageResult {
    let paused = f.paused == "true";
    state.processes.set_paused(&viewer.ctx, &viewer.auth, paused).await?;
    let msg = if paused {
        "The engine is pausing: workers finish their current step and start nothing new."
    } else {
        "The engine runs again."
    };
    Ok(done("/", msg, secure))
}

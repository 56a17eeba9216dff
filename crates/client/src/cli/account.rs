//! Accounts: register, login, logout, whoami.

use anyhow::Context as _;
use clap::Args;

use super::{prompt, Ctx};
use crate::home::SavedToken;
use crate::http::{HttpError, RegisterRequest};

#[derive(Debug, Args)]
pub struct RegisterArgs {
    #[arg(long)]
    pub email: Option<String>,
    #[arg(long)]
    pub username: Option<String>,
    #[arg(long)]
    pub first_name: Option<String>,
    #[arg(long)]
    pub last_name: Option<String>,
    /// Read the password as one line from stdin instead of prompting.
    #[arg(long)]
    pub password_stdin: bool,
    /// Do not log in after registering.
    #[arg(long)]
    pub no_login: bool,
}

#[derive(Debug, Args)]
pub struct LoginArgs {
    #[arg(long)]
    pub email: Option<String>,
    /// Read the password as one line from stdin instead of prompting.
    #[arg(long)]
    pub password_stdin: bool,
}

pub async fn register(ctx: &Ctx, args: RegisterArgs) -> anyhow::Result<()> {
    let api = ctx.anonymous_api()?;
    let email = prompt::text(args.email, "Email", "--email")?;
    let username = prompt::text(args.username, "Username", "--username")?;
    let first_name = prompt::text(args.first_name, "First name", "--first-name")?;
    let last_name = prompt::text(args.last_name, "Last name", "--last-name")?;
    let password = prompt::password(args.password_stdin, "Password")?;
    if !args.password_stdin && prompt::password(false, "Repeat the password")? != password {
        anyhow::bail!("the passwords do not match; nothing was registered");
    }
    let user = api
        .register(&RegisterRequest {
            first_name: &first_name,
            last_name: &last_name,
            username: &username,
            email: &email,
            password: &password,
        })
        .await?;
    println!("registered {} ({})", user.username, user.email);
    if !args.no_login {
        log_in(ctx, &email, &password).await?;
    }
    Ok(())
}

pub async fn login(ctx: &Ctx, args: LoginArgs) -> anyhow::Result<()> {
    let email = prompt::text(args.email, "Email", "--email")?;
    let password = prompt::password(args.password_stdin, "Password")?;
    log_in(ctx, &email, &password).await
}

async fn log_in(ctx: &Ctx, email: &str, password: &str) -> anyhow::Result<()> {
    let api = ctx.anonymous_api()?;
    let resp = api.login(email, password).await?;
    ctx.home.save_token(&SavedToken {
        server: api.base().to_owned(),
        token: resp.token,
        expires_at: resp.expires_at,
        user_id: resp.user.id,
        email: resp.user.email.clone(),
        username: resp.user.username.clone(),
    })?;
    ctx.remember_addresses()?;
    println!("logged in as {} ({})", resp.user.username, resp.user.email);
    Ok(())
}

pub fn logout(ctx: &Ctx) -> anyhow::Result<()> {
    if ctx.home.remove_token()? {
        println!("logged out");
    } else {
        println!("not logged in");
    }
    Ok(())
}

pub async fn whoami(ctx: &Ctx) -> anyhow::Result<()> {
    let token = ctx.token()?;
    let api = ctx.api()?;
    match api.check_token().await {
        Ok(_) => {
            let expiry =
                token.expires_at.map(|t| format!(", token valid until {}", t.to_rfc3339())).unwrap_or_default();
            println!("{} ({}) on {}{expiry}", token.username, token.email, api.base());
            Ok(())
        }
        Err(e @ HttpError::Server { status: 401, .. }) => Err(e).context(format!(
            "logged in as {}, but the server no longer accepts the token; run `filesync login`",
            token.email
        )),
        Err(e) => Err(e.into()),
    }
}

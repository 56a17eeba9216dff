//! Accounts: register, login, logout, passwd, devices, whoami.

use anyhow::Context as _;
use clap::{Args, Subcommand};

use super::{prompt, Ctx};
use crate::http::{HttpError, RegisterRequest};

#[derive(Debug, Args)]
pub struct RegisterArgs {
    /// Email address you log in with [prompted if missing].
    #[arg(long)]
    pub email: Option<String>,
    /// The name others see in shares, presence and conflict copies [prompted if missing].
    #[arg(long)]
    pub username: Option<String>,
    /// Your first name [prompted if missing].
    #[arg(long)]
    pub first_name: Option<String>,
    /// Your last name [prompted if missing].
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
    /// Email address of the account [prompted if missing].
    #[arg(long)]
    pub email: Option<String>,
    /// Read the password as one line from stdin instead of prompting.
    #[arg(long)]
    pub password_stdin: bool,
}

#[derive(Debug, Args)]
pub struct PasswdArgs {
    /// Read the current and the new password as two lines from stdin instead of prompting.
    #[arg(long)]
    pub password_stdin: bool,
}

#[derive(Debug, Subcommand)]
pub enum DevicesCommand {
    /// The account's logged-in devices, this one marked.
    List,
    /// Sign a device out: its agent is disconnected and must log in again.
    Revoke {
        /// The device id, as `filesync devices list` shows it.
        id: i64,
    },
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
    let resp = api.login(email, password, &ctx.device_name()).await?;
    let (username, email) = (resp.user.username.clone(), resp.user.email.clone());
    ctx.home.save_token(&resp.saved(api.base()))?;
    ctx.remember_addresses()?;
    println!("logged in as {username} ({email})");
    Ok(())
}

pub async fn logout(ctx: &Ctx) -> anyhow::Result<()> {
    if ctx.home.token()?.is_none() {
        println!("not logged in");
        return Ok(());
    }
    let outcome = ctx.api()?.logout().await;
    // Forgotten here whatever the server said: a login it refuses is worth nothing anyway.
    ctx.home.remove_token()?;
    match outcome {
        Ok(()) => println!("logged out; the server no longer accepts this device's token"),
        Err(e) if e.is_unauthorized() => println!("logged out (the server had already signed this device out)"),
        Err(e) => {
            println!("logged out here, but the server could not be told ({e}); revoke this device with `filesync devices revoke` from another one")
        }
    }
    Ok(())
}

pub async fn passwd(ctx: &Ctx, args: PasswdArgs) -> anyhow::Result<()> {
    let creds = ctx.credentials()?;
    let (current, new) = if args.password_stdin {
        let mut lines = std::io::stdin().lines();
        let mut next = || lines.next().transpose().map(|l| l.unwrap_or_default());
        (next()?, next()?)
    } else {
        let current = prompt::password(false, "Current password")?;
        let new = prompt::password(false, "New password")?;
        if prompt::password(false, "Repeat the new password")? != new {
            anyhow::bail!("the passwords do not match; the password was not changed");
        }
        (current, new)
    };
    let server = creds.saved().await.server;
    let resp = creds.api().change_password(&current, &new).await.map_err(|e| match e {
        HttpError::Server { status: 403, .. } => anyhow::anyhow!("the current password is incorrect; nothing changed"),
        other => other.into(),
    })?;
    ctx.home.save_token(&resp.saved(&server))?;
    println!("password changed; every other device must log in again");
    Ok(())
}

pub async fn devices(ctx: &Ctx, cmd: DevicesCommand) -> anyhow::Result<()> {
    let api = ctx.api()?;
    match cmd {
        DevicesCommand::List => {
            let rows = api.devices().await?.into_iter().map(|d| {
                let mark = if d.current { "this device" } else { "" };
                [d.id.to_string(), d.name, d.last_used_at.format("%Y-%m-%d %H:%M UTC").to_string(), mark.into()]
            });
            super::print_table(["ID", "DEVICE", "LAST USED", ""], rows);
        }
        DevicesCommand::Revoke { id } => {
            api.revoke_device(id).await?;
            println!("device {id} signed out");
        }
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

//! The diesel schema, one for both backends (ids are BIGINT on MySQL and
//! INTEGER on SQLite; both read as `i64`). Mirrors `migrations/*`.

diesel::table! {
    users (id) {
        id -> BigInt,
        first_name -> Text,
        last_name -> Text,
        username -> Text,
        email -> Text,
        password_hash -> Text,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        token_generation -> BigInt,
    }
}

diesel::table! {
    devices (id) {
        id -> BigInt,
        user_id -> BigInt,
        name -> Text,
        secret_hash -> Binary,
        created_at -> Timestamp,
        last_used_at -> Timestamp,
    }
}

diesel::table! {
    workspaces (id) {
        id -> BigInt,
        name -> Text,
        owner_id -> BigInt,
        head_seq -> BigInt,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        keep_days -> Nullable<Integer>,
        trash_days -> Nullable<Integer>,
        horizon_seq -> BigInt,
    }
}

diesel::table! {
    workspace_members (workspace_id, user_id) {
        workspace_id -> BigInt,
        user_id -> BigInt,
        role -> Text,
        added_by -> BigInt,
        created_at -> Timestamp,
    }
}

diesel::table! {
    file_versions (id) {
        id -> BigInt,
        workspace_id -> BigInt,
        seq -> BigInt,
        op -> Text,
        kind -> Text,
        path -> Text,
        path_hash -> Binary,
        from_path -> Nullable<Text>,
        from_path_hash -> Nullable<Binary>,
        size -> BigInt,
        mtime_ms -> BigInt,
        mode -> Integer,
        content_hash -> Binary,
        manifest -> Binary,
        author_id -> BigInt,
        device_id -> Text,
        deleted -> Bool,
        created_at -> Timestamp,
    }
}

diesel::table! {
    file_heads (workspace_id, path_hash) {
        workspace_id -> BigInt,
        path_hash -> Binary,
        path -> Text,
        seq -> BigInt,
        deleted -> Bool,
        expired_versions -> BigInt,
    }
}

diesel::table! {
    chunks (hash) {
        hash -> Binary,
        size -> Integer,
        stored_size -> Integer,
        created_at -> Timestamp,
        pack_id -> Nullable<Binary>,
        pack_offset -> Nullable<BigInt>,
        format -> Nullable<SmallInt>,
        condemned_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    packs (id) {
        id -> Binary,
        size -> BigInt,
        created_at -> Timestamp,
        retired_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    workspace_chunks (workspace_id, hash) {
        workspace_id -> BigInt,
        hash -> Binary,
        held_at -> Timestamp,
    }
}

diesel::table! {
    gc_leases (name) {
        name -> Text,
        holder -> Text,
        expires_at -> Timestamp,
    }
}

diesel::table! {
    invitations (id) {
        id -> BigInt,
        workspace_id -> BigInt,
        email -> Text,
        role -> Text,
        invited_by -> BigInt,
        created_at -> Timestamp,
    }
}

diesel::joinable!(workspaces -> users (owner_id));
diesel::joinable!(devices -> users (user_id));
diesel::joinable!(workspace_members -> workspaces (workspace_id));
diesel::joinable!(workspace_members -> users (user_id));
diesel::joinable!(file_versions -> workspaces (workspace_id));
diesel::joinable!(file_versions -> users (author_id));
diesel::joinable!(file_heads -> workspaces (workspace_id));
diesel::joinable!(invitations -> workspaces (workspace_id));
diesel::joinable!(invitations -> users (invited_by));

diesel::allow_tables_to_appear_in_same_query!(
    users,
    devices,
    workspaces,
    workspace_members,
    file_versions,
    file_heads,
    chunks,
    packs,
    workspace_chunks,
    invitations,
    gc_leases,
);

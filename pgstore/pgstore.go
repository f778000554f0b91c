// Package pgstore keeps PandaDoc OAuth 2.0 tokens in PostgreSQL and
// serialises their refreshes across processes, so that replicas sharing
// one grant refresh it once.
//
// PandaDoc may rotate refresh tokens, and OAuth servers commonly do
// (RFC 6819, section 5.2.2.3): each refresh returns a new refresh token
// and the old one stops working, and some servers revoke the whole grant
// when a rotated-away refresh token is used again. Replicas that each
// refresh on their own would then race each other, and every replica but
// the first would fail with invalid_grant. A *Store is both a
// pandadocauth.Store and a pandadocauth.Locker, so a
// pandadocauth.TokenSource using it refreshes under a PostgreSQL advisory
// lock: it takes the lock, reads the stored token again, adopts it if
// another replica refreshed already, and otherwise refreshes and saves
// before releasing the lock. This is safe whether or not the server
// rotates.
//
//	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
//	// handle err
//	store := &pgstore.Store{Pool: pool, Key: "workspace-42"}
//	if err := store.CreateTable(ctx); err != nil {
//		// handle err
//	}
//	src := &pandadocauth.TokenSource{Config: conf, Store: store}
//	client := pandadocauth.NewClient(nil, src)
//
// One pool serves any number of grants: one Store, one row and one lock
// per Key.
//
// # Many grants
//
// An app serving many customers' workspaces through one
// pandadocauth.Grants uses Keyed, the same table keyed by grant: a
// pandadocauth.KeyedStore and KeyedLocker, with one row and one advisory
// lock per grant key, the same as a Store with that Key.
//
//	store := &pgstore.Keyed{Pool: pool}
//	if err := store.CreateTable(ctx); err != nil {
//		// handle err
//	}
//	grants := &pandadocauth.Grants{Config: conf, Store: store}
//	client := &http.Client{Transport: grants.Transport(nil)}
//	req = req.WithContext(pandadocauth.WithGrant(ctx, "workspace-42"))
//
// A locked grant holds a pool connection until it is unlocked, so at
// most MaxConns grants refresh at once per process; the others wait for
// a connection, not for each other.
//
// # Table
//
// Store.CreateTable creates the table if it does not exist, with this
// definition (DefaultTable unless Store.Table is set):
//
//	CREATE TABLE IF NOT EXISTS pandadocauth_tokens (
//		key           text        PRIMARY KEY,
//		access_token  text        NOT NULL,
//		token_type    text        NOT NULL DEFAULT '',
//		refresh_token text        NOT NULL DEFAULT '',
//		expiry        timestamptz,              -- NULL: no expiry
//		expires_in    bigint      NOT NULL DEFAULT 0, -- lifetime in seconds, 0: unknown
//		updated_at    timestamptz NOT NULL DEFAULT now()
//	)
//
// and upgrades a table created by an earlier version, which has no
// expires_in column (without it a loaded token's lifetime is unknown, and
// a TokenSource with the default EarlyRefresh refreshes a short-lived
// token it adopted at once):
//
//	ALTER TABLE pandadocauth_tokens ADD COLUMN IF NOT EXISTS expires_in bigint NOT NULL DEFAULT 0
//
// Create or upgrade it yourself, for example in a migration, when the
// application's database role may not alter tables. The role needs
// SELECT, INSERT, UPDATE and DELETE on it.
//
// # Lock
//
// Lock takes a session-level advisory lock, pg_advisory_lock, on a
// 64-bit number derived from Key, on a connection it keeps out of the
// pool until unlock. If the process holding the lock dies, its
// connection closes and PostgreSQL releases the lock. Load and Save
// called while the lock is held use that same connection, so a refresh
// needs one connection however small the pool. If that connection is
// lost while the lock is held (PostgreSQL terminated it, a failover), the
// lock is gone too: Load and Save fail at once with ErrLockLost, instead
// of running on another connection without the lock, until unlock gives
// the connection back. A Save under the lock pings its connection first,
// so that a session ended while idle fails it with ErrLockLost before
// anything is sent (a fenced write: nothing was stored); a connection
// lost after the statement was sent fails it with an error that says
// whether it was stored is unknown, and does not match ErrLockLost. The lock's session is idle while the token
// endpoint is called: Lock turns off idle_session_timeout and
// idle_in_transaction_session_timeout on it, so that a timeout set for
// the role or the database does not end it, and unlock restores them.
// Session-level locks need a session of their own: connect directly or
// through a pooler in session mode, not in transaction mode, and a
// pooler's own idle timeout must be longer than a refresh (one minute).
//
// # Encryption
//
// With Store.EncryptionKey set, access and refresh tokens are sealed
// with AES-GCM before they are written, bound to their Key and column, so
// that a database dump reveals no usable token. A key of the wrong length
// is an error from CreateTable and from the first Load, so that it shows
// at start-up. The keys never appear in fmt, encoding/json or log/slog
// output.
//
// To rotate the key without downtime, with every replica able to read
// what any other wrote at each step:
//
//  1. Deploy EncryptionKey: oldKey, EncryptionKeys: []AESKey{newKey}
//     everywhere: every replica can open tokens sealed with either key.
//  2. Deploy EncryptionKey: newKey, EncryptionKeys: []AESKey{oldKey}:
//     tokens are now sealed with the new key, old ones still open.
//  3. Once every grant has been saved again (each refresh saves; or call
//     Save with what Load returns), deploy EncryptionKey: newKey alone.
//
// # Errors
//
// Errors start with "pgstore:", wrap their cause (match with errors.Is
// and errors.As), and never contain a token or a password.
package pgstore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/oauth2"

	"github.com/gopandadoc/pandadocauth"
)

// DefaultTable is the table a Store uses when its Table is empty.
const DefaultTable = "pandadocauth_tokens"

// Store is a pandadocauth.Store and pandadocauth.Locker for one grant,
// kept in one row of a PostgreSQL table. Set Pool, and Key when the pool
// serves more than one grant; every process sharing the grant must use
// the same Key and Table. (For many grants served through one
// pandadocauth.Grants, use Keyed: the same table, rows and locks.)
//
// The methods of a Store are safe for concurrent use by multiple
// goroutines. Set the fields before first use and do not change them
// afterwards; a Store must not be copied after first use.
type Store struct {
	// Pool is the connection pool. Required.
	Pool *pgxpool.Pool

	// Key identifies the grant, for example a workspace or user ID: one
	// row and one lock per key. The empty string is a key like any
	// other, fine when the pool serves one grant.
	Key string

	// Table is the table holding the tokens, optionally
	// schema-qualified ("auth.pandadoc_tokens"). Empty means
	// DefaultTable.
	Table string

	// EncryptionKey, if set, is an AES key (16, 24 or 32 bytes) with
	// which the access and refresh tokens are encrypted at rest. Rows
	// written without encryption are still read, so encryption can be
	// turned on at any time; the next Save encrypts. Rows written with
	// encryption need one of the Store's keys to be read. A key of the
	// wrong length is an error from CreateTable, Load and Save. The key
	// never appears in fmt, encoding/json or log/slog output.
	EncryptionKey AESKey

	// EncryptionKeys are more keys that open stored tokens, tried after
	// EncryptionKey; Save always seals with EncryptionKey (or, when it is
	// empty, with the first of EncryptionKeys). They let a key be
	// rotated without downtime: see the package documentation.
	EncryptionKeys []AESKey

	// locks holds the connection holding the lock while this Store
	// holds it.
	locks lockTable
}

var (
	_ pandadocauth.Store  = (*Store)(nil)
	_ pandadocauth.Locker = (*Store)(nil)
)

// rows is the Store seen as the implementation it shares with Keyed.
func (s *Store) rows() rows {
	return rows{pool: s.Pool, table: s.Table, key: s.EncryptionKey, keys: s.EncryptionKeys, locks: &s.locks, typ: "Store"}
}

// CreateTable creates the table if it does not exist, and upgrades a
// table created by an earlier version (see the package documentation
// for its definition). It also checks the encryption keys, so that a key
// that cannot be used fails at start-up.
func (s *Store) CreateTable(ctx context.Context) error { return s.rows().createTable(ctx) }

// Load returns the stored token, or (nil, nil) when none is stored for
// Key. Its Expiry has PostgreSQL's microsecond precision; its ExpiresIn
// is the lifetime the token endpoint gave it, in seconds (0 if unknown).
func (s *Store) Load(ctx context.Context) (*oauth2.Token, error) { return s.rows().load(ctx, s.Key) }

// Save stores t for Key, replacing what was stored. A zero Expiry is
// stored as NULL.
func (s *Store) Save(ctx context.Context, t *oauth2.Token) error {
	return s.rows().save(ctx, s.Key, t)
}

// Delete removes the token stored for Key, for example when the grant
// is revoked. Deleting a missing token is not an error.
func (s *Store) Delete(ctx context.Context) error { return s.rows().delete(ctx, s.Key) }

// Lock takes the lock of Key, waiting until it is free or ctx ends, and
// returns the function that releases it. It blocks every other Lock of
// the same Key, in this process or another, and no Lock of another Key.
//
// If ctx ends first, Lock returns an error satisfying errors.Is(err,
// ctx.Err()). The lock dies with its connection: if the holder's process
// or connection dies, the lock is released. unlock may be called more
// than once; calls after the first do nothing.
func (s *Store) Lock(ctx context.Context) (unlock func(), err error) {
	return s.rows().lock(ctx, s.Key)
}

// rows is what Store and Keyed share: a table of tokens, one row and one
// advisory lock per key. It is built from their fields at each call.
type rows struct {
	pool  *pgxpool.Pool
	table string   // as configured: empty means DefaultTable
	key   AESKey   // EncryptionKey
	keys  []AESKey // EncryptionKeys
	locks *lockTable
	typ   string // "Store" or "Keyed", for error messages
}

// querier is what Load, Save and Delete need of a pool or a connection.
type querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

func (r rows) createTable(ctx context.Context) error {
	table, err := r.quotedTable()
	if err != nil {
		return err
	}
	if _, err := r.sealer(); err != nil {
		return err
	}
	// Concurrent CREATE TABLE IF NOT EXISTS statements can fail on
	// PostgreSQL's catalog constraints, so replicas starting together
	// take turns.
	err = pgx.BeginFunc(ctx, r.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, lockID("\x00create table\x00"+table)); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, createTableSQL(table)); err != nil {
			return err
		}
		// Upgrade a table from before expires_in. ALTER TABLE locks the
		// table even when the column exists, so only when it is missing.
		var upToDate bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_attribute
			WHERE attrelid = $1::regclass AND attname = 'expires_in' AND NOT attisdropped)`, table).Scan(&upToDate); err != nil {
			return err
		}
		if !upToDate {
			_, err := tx.Exec(ctx, `ALTER TABLE `+table+` ADD COLUMN IF NOT EXISTS `+expiresInColumn)
			return err
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("pgstore: creating table %s: %w", table, err)
	}
	return nil
}

// expiresInColumn is the definition of the column that version 2 of the
// table added.
const expiresInColumn = `expires_in bigint NOT NULL DEFAULT 0`

func createTableSQL(table string) string {
	return `CREATE TABLE IF NOT EXISTS ` + table + ` (
	key           text        PRIMARY KEY,
	access_token  text        NOT NULL,
	token_type    text        NOT NULL DEFAULT '',
	refresh_token text        NOT NULL DEFAULT '',
	expiry        timestamptz,
	` + expiresInColumn + `,
	updated_at    timestamptz NOT NULL DEFAULT now()
)`
}

func (r rows) load(ctx context.Context, key string) (*oauth2.Token, error) {
	table, err := r.quotedTable()
	if err != nil {
		return nil, err
	}
	sl, err := r.sealer()
	if err != nil {
		return nil, err
	}
	var (
		access, tokenType, refresh string
		expiry                     *time.Time
		expiresIn                  int64
	)
	err = r.do(key, false, func(q querier) error {
		return q.QueryRow(ctx,
			`SELECT access_token, token_type, refresh_token, expiry, expires_in FROM `+table+` WHERE key = $1`,
			key).Scan(&access, &tokenType, &refresh, &expiry, &expiresIn)
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("pgstore: loading token: %w%s", err, upgradeHint(err))
	}
	if access, err = open(sl, key, access, "access_token"); err != nil {
		return nil, err
	}
	if refresh, err = open(sl, key, refresh, "refresh_token"); err != nil {
		return nil, err
	}
	t := &oauth2.Token{AccessToken: access, TokenType: tokenType, RefreshToken: refresh, ExpiresIn: expiresIn}
	if expiry != nil {
		t.Expiry = *expiry
	}
	return t, nil
}

// upgradeHint explains an undefined column: a table from an earlier
// version that was not upgraded.
func upgradeHint(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42703" {
		return " (the table predates this version of pgstore: run CreateTable, or the ALTER TABLE in pgstore's README)"
	}
	return ""
}

func (r rows) save(ctx context.Context, key string, t *oauth2.Token) error {
	table, err := r.quotedTable()
	if err != nil {
		return err
	}
	if t == nil {
		return errors.New("pgstore: saving token: nil token")
	}
	sl, err := r.sealer()
	if err != nil {
		return err
	}
	access, err := sl.Seal(t.AccessToken, additionalData(key, "access_token"))
	if err != nil {
		return fmt.Errorf("pgstore: saving token: %w", err)
	}
	refresh, err := sl.Seal(t.RefreshToken, additionalData(key, "refresh_token"))
	if err != nil {
		return fmt.Errorf("pgstore: saving token: %w", err)
	}
	var expiry *time.Time
	if !t.Expiry.IsZero() {
		expiry = &t.Expiry
	}
	err = r.do(key, true, func(q querier) error {
		_, err := q.Exec(ctx, `INSERT INTO `+table+` AS t
	(key, access_token, token_type, refresh_token, expiry, expires_in, updated_at)
	VALUES ($1, $2, $3, $4, $5, $6, now())
ON CONFLICT (key) DO UPDATE SET
	access_token = excluded.access_token,
	token_type = excluded.token_type,
	refresh_token = excluded.refresh_token,
	expiry = excluded.expiry,
	expires_in = excluded.expires_in,
	updated_at = excluded.updated_at`,
			key, access, t.TokenType, refresh, expiry, max(t.ExpiresIn, 0))
		return err
	})
	if err != nil {
		return fmt.Errorf("pgstore: saving token: %w%s", err, upgradeHint(err))
	}
	return nil
}

func (r rows) delete(ctx context.Context, key string) error {
	table, err := r.quotedTable()
	if err != nil {
		return err
	}
	err = r.do(key, true, func(q querier) error {
		_, err := q.Exec(ctx, `DELETE FROM `+table+` WHERE key = $1`, key)
		return err
	})
	if err != nil {
		return fmt.Errorf("pgstore: deleting token: %w", err)
	}
	return nil
}

// errNoPool is the error of a Store or Keyed without a Pool.
func (r rows) errNoPool() error {
	return errors.New("pgstore: " + r.typ + ".Pool is nil")
}

// quotedTable returns the quoted table name.
func (r rows) quotedTable() (string, error) {
	if r.pool == nil {
		return "", r.errNoPool()
	}
	name := r.table
	if name == "" {
		name = DefaultTable
	}
	parts := strings.Split(name, ".")
	for _, p := range parts {
		if p == "" {
			return "", fmt.Errorf("pgstore: %s.Table %q is not a table name", r.typ, name)
		}
	}
	return pgx.Identifier(parts).Sanitize(), nil
}

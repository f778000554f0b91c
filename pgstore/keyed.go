package pgstore

import (
	"context"

	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/oauth2"

	"github.com/gopandadoc/pandadocauth"
)

// Keyed is a pandadocauth.KeyedStore and pandadocauth.KeyedLocker: the
// tokens of many grants in one PostgreSQL table, one row and one advisory
// lock per grant key, for a pandadocauth.Grants. It uses the table, rows
// and locks of Store: the row and lock of key k are those of a Store
// whose Key is k, so processes using either form share grants safely.
// Each key's lock keeps Store's guarantees: a lock is held on a
// connection of its own, Load and Save of a locked key run on that
// connection (a refresh needs one connection, whatever the pool size),
// and a lost connection fails them with ErrLockLost. Locking one key
// never waits for another.
//
//	store := &pgstore.Keyed{Pool: pool}
//	grants := &pandadocauth.Grants{Config: conf, Store: store}
//
// The methods of a Keyed are safe for concurrent use by multiple
// goroutines. Set the fields before first use and do not change them
// afterwards; a Keyed must not be copied after first use. It keeps no
// state per key except while the key is locked, so it costs nothing per
// grant at rest.
type Keyed struct {
	// Pool is the connection pool. Required.
	Pool *pgxpool.Pool

	// Table is the table holding the tokens, optionally
	// schema-qualified ("auth.pandadoc_tokens"). Empty means
	// DefaultTable.
	Table string

	// EncryptionKey is Store.EncryptionKey: if set, access and refresh
	// tokens are encrypted at rest with it, bound to their grant key and
	// column.
	EncryptionKey AESKey

	// EncryptionKeys is Store.EncryptionKeys: more keys that open stored
	// tokens, for rotating the key without downtime.
	EncryptionKeys []AESKey

	// locks holds the connections holding the locked keys' locks.
	locks lockTable
}

var (
	_ pandadocauth.KeyedStore  = (*Keyed)(nil)
	_ pandadocauth.KeyedLocker = (*Keyed)(nil)
)

// rows is the Keyed seen as the implementation it shares with Store.
func (k *Keyed) rows() rows {
	return rows{pool: k.Pool, table: k.Table, key: k.EncryptionKey, keys: k.EncryptionKeys, locks: &k.locks, typ: "Keyed"}
}

// CreateTable is Store.CreateTable: it creates or upgrades the table,
// and checks the encryption keys.
func (k *Keyed) CreateTable(ctx context.Context) error { return k.rows().createTable(ctx) }

// Load returns the token stored for key, or (nil, nil) when there is
// none.
func (k *Keyed) Load(ctx context.Context, key string) (*oauth2.Token, error) {
	return k.rows().load(ctx, key)
}

// Save stores t for key, replacing what was stored.
func (k *Keyed) Save(ctx context.Context, key string, t *oauth2.Token) error {
	return k.rows().save(ctx, key, t)
}

// Delete removes the token stored for key, for example when the grant is
// revoked. Deleting a missing token is not an error.
func (k *Keyed) Delete(ctx context.Context, key string) error { return k.rows().delete(ctx, key) }

// Lock takes the lock of key, waiting until it is free or ctx ends, and
// returns the function that releases it. It blocks every other Lock of
// the same key (a Keyed's or a Store's), in this process or another, and
// no Lock of another key. It holds one pool connection until unlock.
//
// If ctx ends first, Lock returns an error satisfying errors.Is(err,
// ctx.Err()). unlock may be called more than once; calls after the first
// do nothing.
func (k *Keyed) Lock(ctx context.Context, key string) (unlock func(), err error) {
	return k.rows().lock(ctx, key)
}

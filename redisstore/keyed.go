package redisstore

import (
	"context"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/oauth2"

	"github.com/gopandadoc/pandadocauth"
)

// Keyed is a pandadocauth.KeyedStore and pandadocauth.KeyedLocker: the
// tokens of many grants in Redis, one token key and one lock key per
// grant key, for a pandadocauth.Grants. It uses the keys of Store: the
// token and lock of grant key k are those of a Store whose Key is k,
// under the same hash tag, so processes using either form share grants
// safely, on one node or a Redis Cluster. Each key's lock keeps Store's
// guarantees: a watchdog extends it while held, and Load and Save of a
// locked key are fenced by it (they fail with ErrLockLost once it is
// lost). Locking one key never waits for another.
//
//	store := &redisstore.Keyed{Client: rdb}
//	grants := &pandadocauth.Grants{Config: conf, Store: store}
//
// The methods of a Keyed are safe for concurrent use by multiple
// goroutines. Set the fields before first use and do not change them
// afterwards; a Keyed must not be copied after first use. It keeps no
// state per grant except while the grant is locked (then a watchdog
// goroutine), so it costs nothing per grant at rest.
type Keyed struct {
	// Client is the Redis client: a *redis.Client or a
	// *redis.ClusterClient. Required.
	Client redis.UniversalClient

	// Prefix is Store.Prefix: it starts the Redis keys; empty means
	// DefaultPrefix.
	Prefix string

	// LockTTL is Store.LockTTL: how long a lock outlives a holder that
	// stops extending it; zero means DefaultLockTTL.
	LockTTL time.Duration

	// EncryptionKey is Store.EncryptionKey: if set, access and refresh
	// tokens are encrypted at rest with it, bound to their grant key and
	// field.
	EncryptionKey AESKey

	// EncryptionKeys is Store.EncryptionKeys: more keys that open stored
	// tokens, for rotating the key without downtime.
	EncryptionKeys []AESKey

	// Logger, if set, receives a warning when a lock is lost while held.
	Logger *slog.Logger

	// locks holds the locks of the locked grant keys.
	locks lockTable
}

var (
	_ pandadocauth.KeyedStore  = (*Keyed)(nil)
	_ pandadocauth.KeyedLocker = (*Keyed)(nil)
)

// tokens is the Keyed seen as the implementation it shares with Store.
func (k *Keyed) tokens() tokens {
	return tokens{client: k.Client, prefix: k.Prefix, lockTTL: k.LockTTL, encKey: k.EncryptionKey, encKeys: k.EncryptionKeys,
		logger: k.Logger, locks: &k.locks, typ: "Keyed"}
}

// Load returns the token stored for key, or (nil, nil) when there is
// none. While this Keyed holds key's lock, Load fails with ErrLockLost
// if the lock was lost.
func (k *Keyed) Load(ctx context.Context, key string) (*oauth2.Token, error) {
	return k.tokens().load(ctx, key)
}

// Save stores t for key, replacing what was stored. While this Keyed
// holds key's lock, Save writes only if the lock is still held,
// atomically, and fails with ErrLockLost otherwise.
func (k *Keyed) Save(ctx context.Context, key string, t *oauth2.Token) error {
	return k.tokens().save(ctx, key, t)
}

// Delete removes the token stored for key, for example when the grant is
// revoked. Deleting a missing token is not an error.
func (k *Keyed) Delete(ctx context.Context, key string) error { return k.tokens().delete(ctx, key) }

// Lock takes the lock of key, waiting until it is free or ctx ends, and
// returns the function that releases it. It blocks every other Lock of
// the same key and Prefix (a Keyed's or a Store's), in this process or
// another, and no Lock of another key.
//
// If ctx ends first, Lock returns an error satisfying errors.Is(err,
// ctx.Err()). A busy lock is polled, at most every 100 ms. unlock may be
// called more than once; calls after the first do nothing.
func (k *Keyed) Lock(ctx context.Context, key string) (unlock func(), err error) {
	return k.tokens().lock(ctx, key)
}

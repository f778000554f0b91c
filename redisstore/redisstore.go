// Package redisstore keeps PandaDoc OAuth 2.0 tokens in Redis and
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
// pandadocauth.TokenSource using it refreshes under a Redis lock: it
// takes the lock, reads the stored token again, adopts it if another
// replica refreshed already, and otherwise refreshes and saves before
// releasing the lock. This is safe whether or not the server rotates.
//
//	rdb := redis.NewClient(&redis.Options{Addr: "localhost:6379"})
//	store := &redisstore.Store{Client: rdb, Key: "workspace-42"}
//	src := &pandadocauth.TokenSource{Config: conf, Store: store}
//	client := pandadocauth.NewClient(nil, src)
//
// One client serves any number of grants: one Store, one token key and
// one lock key per Key. Store.Client may be a *redis.Client (one node,
// or Sentinel's failover client) or a *redis.ClusterClient.
//
// # Many grants
//
// An app serving many customers' workspaces through one
// pandadocauth.Grants uses Keyed: a pandadocauth.KeyedStore and
// KeyedLocker with the keys of Store, one token key and one lock key per
// grant key.
//
//	store := &redisstore.Keyed{Client: rdb}
//	grants := &pandadocauth.Grants{Config: conf, Store: store}
//	client := &http.Client{Transport: grants.Transport(nil)}
//	req = req.WithContext(pandadocauth.WithGrant(ctx, "workspace-42"))
//
// # Keys
//
// The token of Key is a JSON document at Prefix+"{"+Key+"}:token", and
// its lock at Prefix+"{"+Key+"}:lock" (Prefix is "pandadocauth:" unless
// set). The braces are a Redis Cluster hash tag: both keys land in the
// same slot, so that the scripts that touch both run on one node. A Key
// that is empty or contains a brace is replaced in the tag by a hash of
// it, because Redis would not read it as a tag ("sha256:" and 24 hex
// digits); so is a Key of that very form, so that two grant keys never
// share a tag.
//
// # Lock
//
// Lock sets the lock key to a random token if it is free (SET NX PX, in
// a script that also takes a lock already holding this Lock's token as
// its own: go-redis retries a request whose reply was lost), for LockTTL
// (DefaultLockTTL, two minutes, unless set: longer than a refresh may
// take, one minute). While the lock is held, a watchdog extends its TTL
// every third of LockTTL with a script that checks the token first. If
// the holder's process dies, the lock expires after LockTTL at most.
// Unlock deletes the key with a script that checks the token, so it never
// deletes a lock another process holds.
//
// A lock can still be lost while held: the watchdog cannot reach Redis
// for a whole LockTTL, or Redis loses the key (a failover to a replica
// that had not received it, an eviction, a FLUSHALL). Then another
// process may take the lock and refresh. The Store is fenced against
// that: while this Store holds the lock, Load and Save run as scripts
// that check, atomically, that the lock key still holds this Store's
// token, and fail with ErrLockLost otherwise, so a refresh that lost its
// lock fails instead of overwriting a newer token. The watchdog logs a
// lost lock to Logger, and so does unlock.
//
// # Encryption
//
// With Store.EncryptionKey set, access and refresh tokens are sealed
// with AES-GCM before they are written, bound to their Key and field, so
// that a dump of Redis reveals no usable token. EncryptionKeys add keys
// that open, for rotation: see EncryptionKeys.
//
// # Errors
//
// Errors start with "redisstore:", wrap their cause (match with
// errors.Is and errors.As), and never contain a token or a password.
package redisstore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/oauth2"

	"github.com/gopandadoc/pandadocauth"
)

// DefaultPrefix starts the keys of a Store whose Prefix is empty.
const DefaultPrefix = "pandadocauth:"

// DefaultLockTTL is the lock's time to live when Store.LockTTL is zero:
// twice as long as a TokenSource's refresh may take.
const DefaultLockTTL = 2 * time.Minute

// Store is a pandadocauth.Store and pandadocauth.Locker for one grant,
// kept in Redis. Set Client, and Key when the client serves more than one
// grant; every process sharing the grant must use the same Key and
// Prefix.
//
// The methods of a Store are safe for concurrent use by multiple
// goroutines. Set the fields before first use and do not change them
// afterwards; a Store must not be copied after first use.
type Store struct {
	// Client is the Redis client: a *redis.Client or a
	// *redis.ClusterClient. Required.
	Client redis.UniversalClient

	// Key identifies the grant, for example a workspace or user ID: one
	// token and one lock per key. The empty string is a key like any
	// other, fine when the client serves one grant.
	Key string

	// Prefix starts the Redis keys; empty means DefaultPrefix. It must
	// not contain braces, which would change the hash tag.
	Prefix string

	// LockTTL is how long the lock outlives a holder that stops
	// extending it (a crashed process); zero means DefaultLockTTL. Keep
	// it longer than a refresh takes: a TokenSource's refresh times out
	// after one minute. It is used in whole milliseconds.
	LockTTL time.Duration

	// EncryptionKey, if set, is an AES key (16, 24 or 32 bytes) with
	// which the access and refresh tokens are encrypted at rest. Tokens
	// written without encryption are still read, so encryption can be
	// turned on at any time; the next Save encrypts. A key of the wrong
	// length is an error from Load and Save. The key never appears in
	// fmt, encoding/json or log/slog output.
	EncryptionKey AESKey

	// EncryptionKeys are more keys that open stored tokens, tried after
	// EncryptionKey; Save seals with EncryptionKey (or, when it is
	// empty, with the first of EncryptionKeys). To rotate without
	// downtime: first add the new key to EncryptionKeys on every
	// process; then make it EncryptionKey and move the old one to
	// EncryptionKeys; once every grant has been saved again (each
	// refresh saves, or call Save with what Load returns), drop the old
	// key.
	EncryptionKeys []AESKey

	// Logger, if set, receives a warning when a lock is lost while
	// held. Nothing is logged by default.
	Logger *slog.Logger

	// locks holds the lock this Store holds, if any.
	locks lockTable
}

var (
	_ pandadocauth.Store  = (*Store)(nil)
	_ pandadocauth.Locker = (*Store)(nil)
)

// tokens is the Store seen as the implementation it shares with Keyed.
func (s *Store) tokens() tokens {
	return tokens{client: s.Client, prefix: s.Prefix, lockTTL: s.LockTTL, encKey: s.EncryptionKey, encKeys: s.EncryptionKeys,
		logger: s.Logger, locks: &s.locks, typ: "Store"}
}

// keys returns the token key and the lock key of Key.
func (s *Store) keys() (token, lock string, err error) { return s.tokens().keys(s.Key) }

// Load returns the stored token, or (nil, nil) when none is stored for
// Key. While this Store holds the lock, Load fails with ErrLockLost if
// the lock was lost.
func (s *Store) Load(ctx context.Context) (*oauth2.Token, error) { return s.tokens().load(ctx, s.Key) }

// Save stores t for Key, replacing what was stored. While this Store
// holds the lock, Save writes only if the lock is still held, atomically,
// and fails with ErrLockLost otherwise.
func (s *Store) Save(ctx context.Context, t *oauth2.Token) error {
	return s.tokens().save(ctx, s.Key, t)
}

// Delete removes the token stored for Key, for example when the grant
// is revoked. Deleting a missing token is not an error.
func (s *Store) Delete(ctx context.Context) error { return s.tokens().delete(ctx, s.Key) }

// Lock takes the lock of Key, waiting until it is free or ctx ends, and
// returns the function that releases it. It blocks every other Lock of
// the same Key and Prefix, in this process or another, and no Lock of
// another Key.
//
// If ctx ends first, Lock returns an error satisfying errors.Is(err,
// ctx.Err()). A busy lock is polled, at most every 100 ms. unlock may be
// called more than once; calls after the first do nothing.
func (s *Store) Lock(ctx context.Context) (unlock func(), err error) {
	return s.tokens().lock(ctx, s.Key)
}

// tokens is what Store and Keyed share: the tokens of grants in Redis,
// one token key and one lock key per grant key. It is built from their
// fields at each call.
type tokens struct {
	client  redis.UniversalClient
	prefix  string        // as configured: empty means DefaultPrefix
	lockTTL time.Duration // as configured: zero means DefaultLockTTL
	encKey  AESKey        // EncryptionKey
	encKeys []AESKey      // EncryptionKeys
	logger  *slog.Logger
	locks   *lockTable
	typ     string // "Store" or "Keyed", for error messages
}

// ErrLockLost means the lock this Store (or Keyed, for the grant key)
// held was lost before it was released: its key expired or was deleted,
// and another process may hold it now. Load and Save refuse to run until
// unlock is called, so that a refresh without the lock cannot overwrite
// a newer token. It wraps pandadocauth.ErrLockLost, which the TokenSource
// answers by taking the lock again before it writes.
var ErrLockLost = fmt.Errorf("the lock's key expired or was deleted: %w", pandadocauth.ErrLockLost)

// stored is the JSON document kept at the token key.
type stored struct {
	AccessToken  string    `json:"access_token"`
	TokenType    string    `json:"token_type,omitempty"`
	RefreshToken string    `json:"refresh_token,omitempty"`
	Expiry       time.Time `json:"expiry"`
	ExpiresIn    int64     `json:"expires_in,omitempty"`
}

// keys returns the token key and the lock key of key.
func (r tokens) keys(key string) (token, lock string, err error) {
	if r.client == nil {
		return "", "", errors.New("redisstore: " + r.typ + ".Client is nil")
	}
	prefix := r.prefix
	if prefix == "" {
		prefix = DefaultPrefix
	}
	if strings.ContainsAny(prefix, "{}") {
		return "", "", errors.New("redisstore: " + r.typ + ".Prefix must not contain braces")
	}
	base := prefix + "{" + hashTag(key) + "}:"
	return base + "token", base + "lock", nil
}

// hashedTag starts the hash tag that stands for a key that cannot be its
// own tag; 24 lowercase hex digits follow.
const hashedTag = "sha256:"

// hashTag is the hash tag of key: the key itself, or a hash of it for a
// key that Redis would not read as a tag (an empty one, or one with a
// brace, which ends the tag early), the same in every process, so that
// both keys stay in one slot. A key that has the form of such a hash is
// hashed too, so that no key's tag is another's: the tags that are keys
// never have that form, and the hashed ones always do.
func hashTag(key string) string {
	if key != "" && !strings.ContainsAny(key, "{}") && !isHashedTag(key) {
		return key
	}
	sum := sha256.Sum256([]byte(key))
	return hashedTag + hex.EncodeToString(sum[:12])
}

// isHashedTag reports whether s has the form of a hashed tag.
func isHashedTag(s string) bool {
	hexPart, ok := strings.CutPrefix(s, hashedTag)
	if !ok || len(hexPart) != 24 {
		return false
	}
	for i := 0; i < len(hexPart); i++ {
		if c := hexPart[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

func (r tokens) load(ctx context.Context, key string) (*oauth2.Token, error) {
	tokenKey, lockKey, err := r.keys(key)
	if err != nil {
		return nil, err
	}
	sl, err := r.sealer()
	if err != nil {
		return nil, err
	}
	var raw string
	if h := r.locks.get(key); h != nil {
		res, err := loadScript.Run(ctx, r.client, []string{tokenKey, lockKey}, h.token).Result()
		if err != nil {
			return nil, fmt.Errorf("redisstore: loading token: %w", err)
		}
		switch v := res.(type) {
		case int64:
			if v == 0 {
				return nil, fmt.Errorf("redisstore: loading token: %w", ErrLockLost)
			}
			return nil, nil // nothing stored
		case string:
			raw = v
		default:
			return nil, fmt.Errorf("redisstore: loading token: unexpected reply of type %T", res)
		}
	} else {
		raw, err = r.client.Get(ctx, tokenKey).Result()
		if errors.Is(err, redis.Nil) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("redisstore: loading token: %w", err)
		}
	}
	var st stored
	if err := json.Unmarshal([]byte(raw), &st); err != nil {
		// Not wrapped: the decoder's message may quote the value.
		return nil, fmt.Errorf("redisstore: loading token: the value at %s is not a token (invalid JSON)", tokenKey)
	}
	if st.AccessToken, err = open(sl, key, st.AccessToken, "access_token"); err != nil {
		return nil, err
	}
	if st.RefreshToken, err = open(sl, key, st.RefreshToken, "refresh_token"); err != nil {
		return nil, err
	}
	return &oauth2.Token{
		AccessToken:  st.AccessToken,
		TokenType:    st.TokenType,
		RefreshToken: st.RefreshToken,
		Expiry:       st.Expiry,
		ExpiresIn:    st.ExpiresIn,
	}, nil
}

func (r tokens) save(ctx context.Context, key string, t *oauth2.Token) error {
	tokenKey, lockKey, err := r.keys(key)
	if err != nil {
		return err
	}
	if t == nil {
		return errors.New("redisstore: saving token: nil token")
	}
	sl, err := r.sealer()
	if err != nil {
		return err
	}
	st := stored{TokenType: t.TokenType, Expiry: t.Expiry, ExpiresIn: max(t.ExpiresIn, 0)}
	if st.AccessToken, err = sl.Seal(t.AccessToken, additionalData(key, "access_token")); err != nil {
		return fmt.Errorf("redisstore: saving token: %w", err)
	}
	if st.RefreshToken, err = sl.Seal(t.RefreshToken, additionalData(key, "refresh_token")); err != nil {
		return fmt.Errorf("redisstore: saving token: %w", err)
	}
	raw, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("redisstore: saving token: encoding: %w", err)
	}
	if h := r.locks.get(key); h != nil {
		ok, err := saveScript.Run(ctx, r.client, []string{tokenKey, lockKey}, raw, h.token).Int()
		if err != nil {
			return fmt.Errorf("redisstore: saving token: %w", err)
		}
		if ok == 0 {
			h.lost(r.logger, "save")
			return fmt.Errorf("redisstore: saving token: %w", ErrLockLost)
		}
		return nil
	}
	if err := r.client.Set(ctx, tokenKey, raw, 0).Err(); err != nil {
		return fmt.Errorf("redisstore: saving token: %w", err)
	}
	return nil
}

func (r tokens) delete(ctx context.Context, key string) error {
	tokenKey, _, err := r.keys(key)
	if err != nil {
		return err
	}
	if err := r.client.Del(ctx, tokenKey).Err(); err != nil {
		return fmt.Errorf("redisstore: deleting token: %w", err)
	}
	return nil
}

var (
	// loadScript returns the token (or 1 if none is stored) if the lock
	// holds ARGV[1], else 0.
	loadScript = redis.NewScript(`
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
local v = redis.call('GET', KEYS[1])
if not v then return 1 end
return v`)

	// saveScript sets the token to ARGV[1] and returns 1 if the lock
	// holds ARGV[2], else returns 0.
	saveScript = redis.NewScript(`
if redis.call('GET', KEYS[2]) ~= ARGV[2] then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
return 1`)
)

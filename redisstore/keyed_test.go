package redisstore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/oauth2"

	"github.com/gopandadoc/pandadocauth"
	"github.com/gopandadoc/pandadocauth/internal/fleettest"
	"github.com/gopandadoc/pandadocauth/internal/testutil"
)

// testKeyed returns a Keyed whose Prefix no other test uses; its keys
// are deleted at the end.
func testKeyed(t testing.TB, rdb *redis.Client) *Keyed {
	t.Helper()
	k := &Keyed{Client: rdb, Prefix: randomName("pandadocauth-test-") + ":"}
	t.Cleanup(func() {
		ctx := context.Background()
		keys, err := rdb.Keys(ctx, k.Prefix+"*").Result()
		if err == nil && len(keys) > 0 {
			rdb.Del(ctx, keys...)
		}
	})
	return k
}

// Many keys: each key reads its own token, concurrently, and Delete
// removes one key only. Keyed shares Store's keys: a Store with Key k
// reads what Keyed saved under k; each grant has its own hash tag.
func TestKeyedManyKeys(t *testing.T) {
	t.Parallel()
	rdb := testClient(t)
	ctx := testContext(t)
	k := testKeyed(t, rdb)
	const n = 200
	key := func(i int) string { return fmt.Sprintf("ws-%d", i) }
	errs := make(chan error, n)
	for i := range n {
		go func() {
			errs <- k.Save(ctx, key(i), &oauth2.Token{AccessToken: "at-" + key(i), RefreshToken: "rt-" + key(i), ExpiresIn: int64(i)})
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	for i := range n {
		go func() {
			tok, err := k.Load(ctx, key(i))
			if err == nil && (tok == nil || tok.AccessToken != "at-"+key(i) || tok.RefreshToken != "rt-"+key(i) || tok.ExpiresIn != int64(i)) {
				err = fmt.Errorf("Load(%s) = %+v; want its own token", key(i), tok)
			}
			errs <- err
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if keys := rdb.Keys(ctx, k.Prefix+"*").Val(); len(keys) != n {
		t.Errorf("%d Redis keys; want %d, one token per grant", len(keys), n)
	}
	tokenKey, lockKey, err := k.tokens().keys(key(7))
	if err != nil || tokenKey != k.Prefix+"{ws-7}:token" || lockKey != k.Prefix+"{ws-7}:lock" {
		t.Errorf("keys of ws-7 = %q, %q, %v; want the grant key as the hash tag", tokenKey, lockKey, err)
	}

	if got, err := (&Store{Client: rdb, Prefix: k.Prefix, Key: key(7)}).Load(ctx); err != nil || got == nil || got.AccessToken != "at-"+key(7) {
		t.Errorf("Store{Key: %q}.Load = %v, %v; want the token Keyed saved", key(7), got, err)
	}
	if err := k.Delete(ctx, key(7)); err != nil {
		t.Fatal(err)
	}
	if got, err := k.Load(ctx, key(7)); got != nil || err != nil {
		t.Errorf("Load after Delete = %v, %v; want nil, nil", got, err)
	}
	if got, err := k.Load(ctx, key(8)); err != nil || got == nil || got.AccessToken != "at-"+key(8) {
		t.Errorf("Load of another key after Delete = %v, %v; want its token", got, err)
	}
	if got, err := k.Load(ctx, "never-saved"); got != nil || err != nil {
		t.Errorf("Load of a missing key = %v, %v; want nil, nil", got, err)
	}
}

// With encryption, a token is bound to its grant key: a value moved to
// another key does not open.
func TestKeyedEncryption(t *testing.T) {
	t.Parallel()
	rdb := testClient(t)
	ctx := testContext(t)
	k := testKeyed(t, rdb)
	k.EncryptionKey = AESKey(strings.Repeat("k", 32))
	if err := k.Save(ctx, "a", &oauth2.Token{AccessToken: "secret-at-a", RefreshToken: "secret-rt-a"}); err != nil {
		t.Fatal(err)
	}
	aKey, _, _ := k.tokens().keys("a")
	bKey, _, _ := k.tokens().keys("b")
	raw := rdb.Get(ctx, aKey).Val()
	if strings.Contains(raw, "secret") {
		t.Fatalf("stored token %q is not encrypted", raw)
	}
	if got, err := k.Load(ctx, "a"); err != nil || got.AccessToken != "secret-at-a" || got.RefreshToken != "secret-rt-a" {
		t.Fatalf("Load = %v, %v; want the saved token", got, err)
	}
	rdb.Set(ctx, bKey, raw, 0)
	if got, err := k.Load(ctx, "b"); err == nil {
		t.Errorf("Load of a value copied from another key = %v; want an error", got)
	} else if strings.Contains(err.Error(), "secret") {
		t.Errorf("error %q contains a token", err)
	}
}

func TestKeyedErrors(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	k := &Keyed{}
	_, lerr := k.Load(ctx, "a")
	_, kerr := k.Lock(ctx, "a")
	tok := &oauth2.Token{AccessToken: "at"}
	for _, err := range []error{lerr, k.Save(ctx, "a", tok), k.Delete(ctx, "a"), kerr} {
		if err == nil || err.Error() != "redisstore: Keyed.Client is nil" {
			t.Errorf("err = %v; want redisstore: Keyed.Client is nil", err)
		}
	}
	bad := &Keyed{Client: offlineClient(t), Prefix: "app:{x}:"}
	if _, err := bad.Load(ctx, "a"); err == nil || err.Error() != "redisstore: Keyed.Prefix must not contain braces" {
		t.Errorf("Prefix with braces: %v", err)
	}
}

// Neither the keys nor the client's password show in fmt, encoding/json
// or log/slog output of a Keyed.
func TestKeyedRedacted(t *testing.T) {
	t.Parallel()
	key := []byte("0123456789-SECRET-KEY-0123456789")
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", Password: "SECRET-PASSWORD", MaintNotificationsConfig: noMaint})
	defer rdb.Close()
	k := &Keyed{Client: rdb, Prefix: "p:", EncryptionKey: key, EncryptionKeys: []AESKey{key}}
	var out []string
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%x", "%q"} {
		out = append(out, fmt.Sprintf(verb, k))
	}
	js, err := json.Marshal(struct{ Store *Keyed }{k})
	if err != nil {
		t.Fatal(err)
	}
	out = append(out, string(js))
	var buf bytes.Buffer
	slog.New(slog.NewTextHandler(&buf, nil)).Info("m", "store", k)
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("m", "store", k)
	out = append(out, buf.String())
	for _, o := range out {
		if strings.Contains(o, "SECRET") || strings.Contains(o, "534543524554") || strings.Contains(o, "83 69 67 82") {
			t.Errorf("a secret shows: %s", o)
		}
	}
	if got := k.String(); got != `redisstore.Keyed{Prefix: "p:", encryption keys: 2}` {
		t.Errorf("String = %s", got)
	}
}

// One lock per grant key: a held key blocks Locks of that key, from
// another Keyed and from a Store of that Key, and no Lock of another key;
// each lock has a watchdog of its own.
func TestKeyedLockPerKey(t *testing.T) {
	t.Parallel()
	rdb := testClient(t)
	extended := extensions(t, rdb)
	ctx := testContext(t)
	first := testKeyed(t, rdb)
	first.LockTTL = 3 * time.Second
	second := &Keyed{Client: rdb, Prefix: first.Prefix} // as in another process
	_, lockA, _ := first.tokens().keys("a")

	unlockA, err := first.Lock(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(unlockA)
	// Locks of a that cannot be had before their deadline fail with it.
	dctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if u, err := second.Lock(dctx, "a"); err == nil {
		u()
		t.Fatal("a second Keyed's Lock of a succeeded while the first held it")
	} else if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("second Lock of a: %v; want the deadline", err)
	}
	if u, err := (&Store{Client: rdb, Prefix: first.Prefix, Key: "a"}).Lock(dctx); err == nil {
		u()
		t.Fatal("a Store's Lock of a succeeded while a Keyed held it")
	}

	// b is free, from both Keyeds, while a is held.
	for _, k := range []*Keyed{first, second} {
		bctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		unlockB, err := k.Lock(bctx, "b")
		cancel()
		if err != nil {
			t.Fatalf("Lock of b while a is held: %v", err)
		}
		unlockB()
	}

	// a's watchdog extends a's lock.
	start := time.Now()
	ttl := rdb.PTTL(ctx, lockA).Val()
	waitExtended(t, extended, lockA)
	if got := rdb.PTTL(ctx, lockA).Val(); got <= ttl-time.Since(start)+200*time.Millisecond {
		t.Errorf("a's TTL %v after the extension; want more than %v", got, ttl-time.Since(start)+200*time.Millisecond)
	}

	waiting := make(chan lockResult, 1)
	go func() {
		u, err := second.Lock(ctx, "a")
		waiting <- lockResult{u, err}
	}()
	unlockA()
	select {
	case r := <-waiting:
		if r.err != nil {
			t.Fatalf("Lock of a after unlock: %v", r.err)
		}
		r.unlock()
	case <-time.After(10 * time.Second):
		t.Fatal("Lock of a did not return after unlock")
	}
	if n := rdb.Exists(ctx, lockA).Val(); n != 0 {
		t.Errorf("a's lock key exists after every unlock")
	}
}

// A lost lock fails its own key's Load and Save with ErrLockLost, writes
// nothing, and leaves other keys' locks alone.
func TestKeyedLockLostPerKey(t *testing.T) {
	t.Parallel()
	rdb := testClient(t)
	ctx := testContext(t)
	var logs testutil.Buffer
	k := testKeyed(t, rdb)
	k.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	for _, key := range []string{"a", "b"} {
		if err := k.Save(ctx, key, &oauth2.Token{AccessToken: "at-1-" + key}); err != nil {
			t.Fatal(err)
		}
	}
	unlockA, err := k.Lock(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(unlockA)
	unlockB, err := k.Lock(ctx, "b")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(unlockB)
	_, lockA, _ := k.tokens().keys("a")
	// a's lock expired and another process took it.
	if err := rdb.Set(ctx, lockA, "another-process", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	serr := k.Save(ctx, "a", &oauth2.Token{AccessToken: "at-2-a"})
	_, lerr := k.Load(ctx, "a")
	for _, err := range []error{serr, lerr} {
		if !errors.Is(err, ErrLockLost) {
			t.Errorf("err = %v; want ErrLockLost", err)
		}
	}
	if err := k.Save(ctx, "b", &oauth2.Token{AccessToken: "at-2-b"}); err != nil {
		t.Errorf("Save of b, whose lock is held: %v", err)
	}
	if got, err := k.Load(ctx, "b"); err != nil || got.AccessToken != "at-2-b" {
		t.Errorf("Load of b = %v, %v; want at-2-b", got, err)
	}
	unlockA()
	unlockB()
	if v := rdb.Get(ctx, lockA).Val(); v != "another-process" {
		t.Errorf("a's lock = %q after unlock; want the other process's", v)
	}
	if got, err := k.Load(ctx, "a"); err != nil || got.AccessToken != "at-1-a" {
		t.Errorf("a's token = %v, %v; want at-1-a: Save wrote without the lock", got, err)
	}
	if !strings.Contains(logs.String(), "lock was lost") {
		t.Errorf("log %q does not report the lost lock", logs.String())
	}
}

// Many grants through two Grants (two replicas, each with a client and a
// Keyed of its own), against a token endpoint that rotates refresh
// tokens: when every access token expires together and both replicas
// serve every grant at once, each grant is refreshed exactly once
// fleet-wide, and nothing fails.
func TestKeyedGrants(t *testing.T) {
	t.Parallel()
	seed := testKeyed(t, testClient(t))
	fleettest.Grants(t, seed,
		func() pandadocauth.KeyedStore { return &Keyed{Client: testClient(t), Prefix: seed.Prefix} },
		func(i int) string { return fmt.Sprint("ws-", i) })
	// No lock is left behind.
	if locks := seed.Client.Keys(testContext(t), seed.Prefix+"*:lock").Val(); len(locks) != 0 {
		t.Errorf("locks left: %v", locks)
	}
}

// hashedTagOf is the tag that stands for a key Redis cannot use as a tag,
// worked out here from its definition: "sha256:" and the first 12 bytes
// of the key's SHA-256, in hex.
func hashedTagOf(key string) string {
	sum := sha256.Sum256([]byte(key))
	return "sha256:" + hex.EncodeToString(sum[:12])
}

// A grant key that is literally the hashed tag of another (an empty key,
// or one with braces) gets keys of its own: no shared token, no shared
// lock. Keys that were hashed before keep their tags, so that what they
// stored is still found.
func TestKeyedHashedTagsDoNotCollide(t *testing.T) {
	t.Parallel()
	rdb := testClient(t)
	ctx := testContext(t)
	k := &Keyed{Client: rdb, Prefix: randomName("test-") + ":"}
	for _, hashed := range []string{"", "{acme}", "a}b", "{"} {
		literal := hashedTagOf(hashed)
		t.Run(fmt.Sprintf("%q and %q", hashed, literal), func(t *testing.T) {
			hashedToken, hashedLock, _ := k.tokens().keys(hashed)
			literalToken, literalLock, _ := k.tokens().keys(literal)
			t.Cleanup(func() { rdb.Del(context.Background(), hashedToken, hashedLock, literalToken, literalLock) })
			if want := k.Prefix + "{" + literal + "}:token"; hashedToken != want {
				t.Errorf("token key of %q = %q; want %q, as before", hashed, hashedToken, want)
			}
			if literalToken == hashedToken || literalLock == hashedLock {
				t.Fatalf("%q and %q share keys %q, %q", hashed, literal, literalToken, literalLock)
			}
			if slot(literalToken) != slot(literalLock) {
				t.Errorf("the keys of %q are in two slots", literal)
			}

			for _, key := range []string{hashed, literal} {
				if err := k.Save(ctx, key, &oauth2.Token{AccessToken: "at-" + key, RefreshToken: "rt-" + key}); err != nil {
					t.Fatal(err)
				}
			}
			for _, key := range []string{hashed, literal} {
				if tok, err := k.Load(ctx, key); err != nil || tok.AccessToken != "at-"+key {
					t.Errorf("Load(%q) = %v, %v; want its own token", key, tok, err)
				}
			}
			unlock, err := k.Lock(ctx, hashed)
			if err != nil {
				t.Fatal(err)
			}
			defer unlock()
			lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			u, err := k.Lock(lctx, literal)
			if err != nil {
				t.Fatalf("Lock(%q) while %q is locked: %v; want a lock of its own", literal, hashed, err)
			}
			u()
		})
	}
	// Keys that only look a little like a hashed tag stay their own tag.
	for _, key := range []string{"sha256:", "sha256:abc", "sha256:" + strings.ToUpper(strings.TrimPrefix(hashedTagOf("x"), "sha256:")), hashedTagOf("x") + "0", "x" + hashedTagOf("x")} {
		if tokenKey, _, _ := k.tokens().keys(key); tokenKey != k.Prefix+"{"+key+"}:token" {
			t.Errorf("token key of %q = %q; want the key as its tag", key, tokenKey)
		}
	}
}

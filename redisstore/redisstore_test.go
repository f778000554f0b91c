package redisstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
	"go.uber.org/goleak"
	"golang.org/x/oauth2"

	"github.com/gopandadoc/pandadocauth/internal/fleettest"
	"github.com/gopandadoc/pandadocauth/internal/testserver"
)

func TestMain(m *testing.M) {
	if fleettest.IsWorker() {
		// A fleet worker process: the parent test checks for leaks.
		os.Exit(m.Run())
	}
	goleak.VerifyTestMain(testserver.Main(m))
}

// testOptions returns the test server's options: the server that
// PANDADOCAUTH_REDIS_ADDR names, or a throw-away one (see testserver).
// Without either the test is skipped, except in CI, where that is a
// failure.
func testOptions(t testing.TB) *redis.Options {
	t.Helper()
	srv := testserver.Redis(t)
	return &redis.Options{Network: srv.Network, Addr: srv.Addr, Password: srv.Password, MaintNotificationsConfig: noMaint}
}

// noMaint turns off go-redis's maintenance notifications, whose
// circuit-breaker goroutine can outlive the client (go-redis v9.17) and
// would fail the leak check. The stores do not depend on them.
var noMaint = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}

// offlineClient is a client for tests that never reach a server.
func offlineClient(t testing.TB) *redis.Client {
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaintNotificationsConfig: noMaint})
	t.Cleanup(func() { rdb.Close() })
	return rdb
}

// testClient connects to the test server.
func testClient(t testing.TB) *redis.Client {
	t.Helper()
	rdb := redis.NewClient(testOptions(t))
	t.Cleanup(func() { rdb.Close() })
	if err := rdb.Ping(context.Background()).Err(); err != nil {
		t.Fatalf("connecting to Redis: %v", err)
	}
	return rdb
}

// testStore returns a Store on a grant key no other test uses, whose
// keys are deleted at the end.
func testStore(t testing.TB, rdb *redis.Client) *Store {
	t.Helper()
	s := &Store{Client: rdb, Key: randomName("grant-")}
	tokenKey, lockKey, err := s.keys()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rdb.Del(context.Background(), tokenKey, lockKey) })
	return s
}

func randomName(prefix string) string {
	b := make([]byte, 6)
	rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

func testContext(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// assertToken compares the fields a Store keeps.
func assertToken(t *testing.T, got, want *oauth2.Token) {
	t.Helper()
	if got == nil {
		t.Fatal("Load = nil; want a token")
	}
	if got.AccessToken != want.AccessToken || got.TokenType != want.TokenType || got.RefreshToken != want.RefreshToken ||
		!got.Expiry.Equal(want.Expiry) || got.ExpiresIn != want.ExpiresIn {
		t.Errorf("Load = {%q %q %q %v %d}; want {%q %q %q %v %d}",
			got.AccessToken, got.TokenType, got.RefreshToken, got.Expiry, got.ExpiresIn,
			want.AccessToken, want.TokenType, want.RefreshToken, want.Expiry, want.ExpiresIn)
	}
}

func TestSaveLoad(t *testing.T) {
	t.Parallel()
	rdb := testClient(t)
	ctx := testContext(t)
	expiry := time.Now().Add(time.Hour)
	tests := []struct {
		name string
		tok  *oauth2.Token
	}{
		{"full", &oauth2.Token{AccessToken: "at-1", TokenType: "Bearer", RefreshToken: "rt-1", Expiry: expiry, ExpiresIn: 3600}},
		{"no expiry", &oauth2.Token{AccessToken: "at-2", TokenType: "Bearer", RefreshToken: "rt-2"}},
		{"no refresh token", &oauth2.Token{AccessToken: "at-3", Expiry: expiry}},
		{"refresh token only", &oauth2.Token{RefreshToken: "rt-4"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := testStore(t, rdb)
			if tok, err := s.Load(ctx); tok != nil || err != nil {
				t.Fatalf("Load of nothing = %v, %v; want nil, nil", tok, err)
			}
			if err := s.Save(ctx, tt.tok); err != nil {
				t.Fatal(err)
			}
			got, err := (&Store{Client: rdb, Key: s.Key}).Load(ctx)
			if err != nil {
				t.Fatal(err)
			}
			assertToken(t, got, tt.tok)
			// The same under the lock.
			unlock, err := s.Lock(ctx)
			if err != nil {
				t.Fatal(err)
			}
			got, err = s.Load(ctx)
			unlock()
			if err != nil {
				t.Fatal(err)
			}
			assertToken(t, got, tt.tok)
		})
	}
	t.Run("overwrite and delete", func(t *testing.T) {
		s := testStore(t, rdb)
		other := testStore(t, rdb)
		second := &oauth2.Token{AccessToken: "new", TokenType: "bearer", RefreshToken: "new-rt"}
		for _, tok := range []*oauth2.Token{{AccessToken: "old", RefreshToken: "old-rt", Expiry: expiry}, second} {
			if err := s.Save(ctx, tok); err != nil {
				t.Fatal(err)
			}
		}
		got, err := s.Load(ctx)
		if err != nil {
			t.Fatal(err)
		}
		assertToken(t, got, second)
		if got, err := other.Load(ctx); got != nil || err != nil {
			t.Errorf("another key's Load = %v, %v; want nil, nil", got, err)
		}
		if err := s.Delete(ctx); err != nil {
			t.Fatal(err)
		}
		if got, err := s.Load(ctx); got != nil || err != nil {
			t.Errorf("Load after Delete = %v, %v; want nil, nil", got, err)
		}
		if err := s.Delete(ctx); err != nil {
			t.Errorf("deleting nothing: %v", err)
		}
	})
}

// crc16 is Redis Cluster's key hash (CRC-16/XMODEM).
func crc16(b []byte) uint16 {
	var crc uint16
	for _, c := range b {
		crc ^= uint16(c) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}

// slot is the Redis Cluster slot of key, hash tags included, as the
// cluster specification defines it.
func slot(key string) uint16 {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			key = key[i+1 : i+1+j]
		}
	}
	return crc16([]byte(key)) % 16384
}

// The token and lock keys of a grant share a Cluster slot, whatever the
// grant key, so that the scripts using both run on one node.
func TestKeysShareSlot(t *testing.T) {
	t.Parallel()
	if got := crc16([]byte("123456789")); got != 0x31c3 {
		t.Fatalf("crc16 check value = %#x; want 0x31c3", got)
	}
	seen := map[string]string{}
	for _, key := range []string{"", "workspace-42", "{", "}", "{}", "}{", "a{b}c", "x}y", "{a}", "üñí"} {
		s := &Store{Client: offlineClient(t), Key: key}
		tokenKey, lockKey, err := s.keys()
		if err != nil {
			t.Fatal(err)
		}
		if slot(tokenKey) != slot(lockKey) {
			t.Errorf("Key %q: %s in slot %d, %s in slot %d", key, tokenKey, slot(tokenKey), lockKey, slot(lockKey))
		}
		if prev, dup := seen[tokenKey]; dup {
			t.Errorf("Keys %q and %q share %s", prev, key, tokenKey)
		}
		seen[tokenKey] = key
	}
	if got, _, _ := (&Store{Client: offlineClient(t), Key: "w"}).keys(); got != "pandadocauth:{w}:token" {
		t.Errorf("token key = %q; want pandadocauth:{w}:token", got)
	}
	bad := &Store{Client: offlineClient(t), Prefix: "app:{x}:"}
	if _, err := bad.Load(context.Background()); err == nil || !strings.HasPrefix(err.Error(), "redisstore: ") {
		t.Errorf("Prefix with braces: %v; want a redisstore error", err)
	}
}

func TestErrors(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	tok := &oauth2.Token{AccessToken: "secret-access-token", RefreshToken: "secret-refresh-token"}
	check := func(t *testing.T, err error, secrets ...string) {
		t.Helper()
		if err == nil || !strings.HasPrefix(err.Error(), "redisstore: ") {
			t.Fatalf("err = %v; want a redisstore error", err)
		}
		for _, s := range append(secrets, "secret") {
			if strings.Contains(err.Error(), s) {
				t.Errorf("error %q contains a secret", err)
			}
		}
	}
	t.Run("no client", func(t *testing.T) {
		s := &Store{}
		_, lerr := s.Load(ctx)
		_, kerr := s.Lock(ctx)
		for _, err := range []error{lerr, s.Save(ctx, tok), s.Delete(ctx), kerr} {
			if err == nil || err.Error() != "redisstore: Store.Client is nil" {
				t.Errorf("err = %v; want redisstore: Store.Client is nil", err)
			}
		}
	})
	rdb := testClient(t)
	t.Run("nil token", func(t *testing.T) {
		check(t, testStore(t, rdb).Save(ctx, nil))
	})
	t.Run("not a token", func(t *testing.T) {
		s := testStore(t, rdb)
		tokenKey, _, _ := s.keys()
		rdb.Set(ctx, tokenKey, `{"access_token":"secret-at", "expiry": "secret-rt"`, 0)
		_, err := s.Load(ctx)
		check(t, err)
	})
	t.Run("wrong password", func(t *testing.T) {
		opts := testOptions(t)
		if opts.Password == "" {
			// The servers testserver starts have one.
			t.Skip("the Redis that " + testserver.RedisAddrEnv + " names has no password")
		}
		wrong := "wrong-" + opts.Password[:8] + "-pw"
		opts.Password = wrong
		bad := redis.NewClient(opts)
		defer bad.Close()
		s := &Store{Client: bad, Key: randomName("grant-")}
		_, lerr := s.Load(ctx)
		_, kerr := s.Lock(ctx)
		for _, err := range []error{lerr, s.Save(ctx, tok), kerr} {
			check(t, err, wrong, testOptions(t).Password)
		}
	})
	t.Run("unreachable", func(t *testing.T) {
		dead := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", Password: "secret-password", MaxRetries: -1, MaintNotificationsConfig: noMaint})
		defer dead.Close()
		_, err := (&Store{Client: dead}).Load(ctx)
		check(t, err, "secret-password")
	})
}

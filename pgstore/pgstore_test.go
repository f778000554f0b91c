package pgstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/goleak"
	"golang.org/x/oauth2"

	"github.com/gopandadoc/pandadocauth"
	"github.com/gopandadoc/pandadocauth/internal/fleettest"
	"github.com/gopandadoc/pandadocauth/internal/testserver"
)

// dsnEnv names the variable holding the PostgreSQL connection string of
// the tests: .ci/postgres.sh sets it, or testserver when it starts a
// server of its own.
const dsnEnv = testserver.PostgresEnv

func TestMain(m *testing.M) {
	if fleettest.IsWorker() {
		// A fleet worker process: it exits as soon as its run is
		// reported, while its TokenSource may still finish a background
		// refresh. The parent test checks for leaks.
		os.Exit(m.Run())
	}
	// After a connection dies, pgxpool starts a health check that
	// sleeps 500 ms first, and Pool.Close does not wait for it: it ends
	// on its own, so it is not a leak.
	goleak.VerifyTestMain(testserver.Main(m), goleak.IgnoreAnyFunction("github.com/jackc/pgx/v5/pgxpool.(*Pool).triggerHealthCheck.func1"))
}

// testPool connects to the test database: the one PANDADOCAUTH_PG_DSN
// names, or a throw-away server (see testserver). Without either the test
// is skipped, except in CI, where that is a failure.
func testPool(t testing.TB, maxConns int32) *pgxpool.Pool {
	t.Helper()
	return testPoolWith(t, maxConns, nil)
}

// testPoolWith is testPool with settings for every session of the pool,
// as a role's or a database's settings would be.
func testPoolWith(t testing.TB, maxConns int32, settings map[string]string) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(testserver.Postgres(t))
	if err != nil {
		t.Fatalf("parsing %s: %v", dsnEnv, err)
	}
	if maxConns > 0 {
		cfg.MaxConns = maxConns
	}
	for k, v := range settings {
		cfg.ConnConfig.RuntimeParams[k] = v
	}
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatalf("connecting: %v", err)
	}
	t.Cleanup(pool.Close)
	if err := pool.Ping(context.Background()); err != nil {
		t.Fatalf("connecting: %v", err)
	}
	return pool
}

// randomName returns prefix and a random suffix, for tables and keys no
// other test uses.
func randomName(prefix string) string {
	b := make([]byte, 6)
	rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// testTable creates a table of its own for the test and drops it at the
// end.
func testTable(t testing.TB, pool *pgxpool.Pool) string {
	t.Helper()
	table := randomName("pgstore_test_")
	s := &Store{Pool: pool, Table: table}
	if err := s.CreateTable(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := pool.Exec(context.Background(), `DROP TABLE IF EXISTS `+table); err != nil {
			t.Errorf("dropping %s: %v", table, err)
		}
	})
	return table
}

func testContext(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestLoadEmpty(t *testing.T) {
	t.Parallel()
	pool := testPool(t, 0)
	s := &Store{Pool: pool, Table: testTable(t, pool), Key: "nobody"}
	tok, err := s.Load(testContext(t))
	if tok != nil || err != nil {
		t.Fatalf("Load on an empty table = %v, %v; want nil, nil", tok, err)
	}
}

func TestSaveLoad(t *testing.T) {
	t.Parallel()
	pool := testPool(t, 0)
	table := testTable(t, pool)
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
			s := &Store{Pool: pool, Table: table, Key: tt.name}
			if err := s.Save(ctx, tt.tok); err != nil {
				t.Fatal(err)
			}
			got, err := s.Load(ctx)
			if err != nil {
				t.Fatal(err)
			}
			assertToken(t, got, tt.tok)
		})
	}

	t.Run("overwrite", func(t *testing.T) {
		s := &Store{Pool: pool, Table: table, Key: "overwrite"}
		first := &oauth2.Token{AccessToken: "old", TokenType: "Bearer", RefreshToken: "old-rt", Expiry: expiry}
		second := &oauth2.Token{AccessToken: "new", TokenType: "bearer", RefreshToken: "new-rt"}
		for _, tok := range []*oauth2.Token{first, second} {
			if err := s.Save(ctx, tok); err != nil {
				t.Fatal(err)
			}
		}
		got, err := s.Load(ctx)
		if err != nil {
			t.Fatal(err)
		}
		assertToken(t, got, second)
	})
}

// assertToken compares the fields a Store keeps, Expiry to PostgreSQL's
// microsecond.
func assertToken(t *testing.T, got, want *oauth2.Token) {
	t.Helper()
	if got == nil {
		t.Fatal("Load = nil; want a token")
	}
	if got.AccessToken != want.AccessToken || got.TokenType != want.TokenType || got.RefreshToken != want.RefreshToken {
		t.Errorf("Load = {%q %q %q}; want {%q %q %q}", got.AccessToken, got.TokenType, got.RefreshToken,
			want.AccessToken, want.TokenType, want.RefreshToken)
	}
	if !got.Expiry.Equal(want.Expiry.Truncate(time.Microsecond)) {
		t.Errorf("Load Expiry = %v; want %v", got.Expiry, want.Expiry)
	}
	if got.ExpiresIn != want.ExpiresIn {
		t.Errorf("Load ExpiresIn = %d; want %d", got.ExpiresIn, want.ExpiresIn)
	}
}

// A table created before expires_in existed is upgraded by CreateTable,
// keeps its rows, and then stores the lifetime; before the upgrade, Load
// says what to do.
func TestCreateTableUpgrades(t *testing.T) {
	t.Parallel()
	pool := testPool(t, 0)
	ctx := testContext(t)
	table := randomName("pgstore_old_")
	// The first version's table, with a row.
	if _, err := pool.Exec(ctx, `CREATE TABLE `+table+` (
	key           text        PRIMARY KEY,
	access_token  text        NOT NULL,
	token_type    text        NOT NULL DEFAULT '',
	refresh_token text        NOT NULL DEFAULT '',
	expiry        timestamptz,
	updated_at    timestamptz NOT NULL DEFAULT now()
)`); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pool.Exec(context.Background(), `DROP TABLE IF EXISTS `+table) })
	if _, err := pool.Exec(ctx, `INSERT INTO `+table+` (key, access_token, refresh_token) VALUES ('old', 'at-old', 'rt-old')`); err != nil {
		t.Fatal(err)
	}
	s := &Store{Pool: pool, Table: table, Key: "old"}
	if _, err := s.Load(ctx); err == nil || !strings.Contains(err.Error(), "CreateTable") {
		t.Errorf("Load from a table not upgraded = %v; want an error telling to run CreateTable", err)
	}

	if err := s.CreateTable(ctx); err != nil {
		t.Fatal(err)
	}
	got, err := s.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	assertToken(t, got, &oauth2.Token{AccessToken: "at-old", RefreshToken: "rt-old"})
	want := &oauth2.Token{AccessToken: "at-new", TokenType: "Bearer", RefreshToken: "rt-new", Expiry: time.Now().Add(4 * time.Second), ExpiresIn: 4}
	if err := s.Save(ctx, want); err != nil {
		t.Fatal(err)
	}
	got, err = (&Store{Pool: pool, Table: table, Key: "old"}).Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	assertToken(t, got, want)
	// Upgrading an upgraded table changes nothing.
	if err := s.CreateTable(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestKeysIsolated(t *testing.T) {
	t.Parallel()
	pool := testPool(t, 0)
	table := testTable(t, pool)
	ctx := testContext(t)
	a := &Store{Pool: pool, Table: table, Key: "a"}
	b := &Store{Pool: pool, Table: table, Key: "b"}
	empty := &Store{Pool: pool, Table: table}
	if err := a.Save(ctx, &oauth2.Token{AccessToken: "at-a", RefreshToken: "rt-a"}); err != nil {
		t.Fatal(err)
	}
	if got, err := b.Load(ctx); got != nil || err != nil {
		t.Fatalf("b.Load after a.Save = %v, %v; want nil, nil", got, err)
	}
	if got, err := empty.Load(ctx); got != nil || err != nil {
		t.Fatalf("Load with the empty key after a.Save = %v, %v; want nil, nil", got, err)
	}
	if err := b.Save(ctx, &oauth2.Token{AccessToken: "at-b", RefreshToken: "rt-b"}); err != nil {
		t.Fatal(err)
	}
	if got, err := a.Load(ctx); err != nil || got.AccessToken != "at-a" {
		t.Fatalf("a.Load after b.Save = %v, %v; want a's token", got, err)
	}
	if err := a.Delete(ctx); err != nil {
		t.Fatal(err)
	}
	if got, err := a.Load(ctx); got != nil || err != nil {
		t.Fatalf("a.Load after a.Delete = %v, %v; want nil, nil", got, err)
	}
	if got, err := b.Load(ctx); err != nil || got.AccessToken != "at-b" {
		t.Fatalf("b.Load after a.Delete = %v, %v; want b's token", got, err)
	}
	if err := a.Delete(ctx); err != nil {
		t.Fatalf("deleting a missing token: %v", err)
	}
}

func TestCreateTable(t *testing.T) {
	t.Parallel()
	pool := testPool(t, 0)
	ctx := testContext(t)
	table := testTable(t, pool)
	s := &Store{Pool: pool, Table: table}
	// Again, and from several replicas at once: no error.
	errs := make(chan error, 4)
	for range 4 {
		go func() { errs <- s.CreateTable(ctx) }()
	}
	for range 4 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}

	// A schema-qualified name.
	schema := randomName("pgstore_schema_")
	if _, err := pool.Exec(ctx, `CREATE SCHEMA `+schema); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pool.Exec(context.Background(), `DROP SCHEMA `+schema+` CASCADE`) })
	q := &Store{Pool: pool, Table: schema + ".tokens", Key: "k"}
	if err := q.CreateTable(ctx); err != nil {
		t.Fatal(err)
	}
	if err := q.Save(ctx, &oauth2.Token{AccessToken: "at"}); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM `+schema+`.tokens`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("rows in %s.tokens = %d, %v; want 1", schema, n, err)
	}
}

func TestErrors(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	tok := &oauth2.Token{AccessToken: "secret-access-token", RefreshToken: "secret-refresh-token"}

	t.Run("no pool", func(t *testing.T) {
		s := &Store{}
		_, lerr := s.Load(ctx)
		_, kerr := s.Lock(ctx)
		for _, err := range []error{lerr, s.Save(ctx, tok), s.Delete(ctx), s.CreateTable(ctx), kerr} {
			if err == nil || err.Error() != "pgstore: Store.Pool is nil" {
				t.Errorf("err = %v; want pgstore: Store.Pool is nil", err)
			}
		}
	})

	pool := testPool(t, 0)
	t.Run("bad table name", func(t *testing.T) {
		s := &Store{Pool: pool, Table: "a..b"}
		if _, err := s.Load(ctx); err == nil || !strings.HasPrefix(err.Error(), "pgstore: ") {
			t.Errorf("Load = %v; want a pgstore error", err)
		}
	})
	t.Run("missing table", func(t *testing.T) {
		s := &Store{Pool: pool, Table: randomName("pgstore_missing_")}
		_, lerr := s.Load(ctx)
		for _, err := range []error{lerr, s.Save(ctx, tok)} {
			if err == nil || !strings.HasPrefix(err.Error(), "pgstore: ") {
				t.Fatalf("err = %v; want a pgstore error", err)
			}
			if strings.Contains(err.Error(), "secret") {
				t.Errorf("error %q contains a token", err)
			}
		}
	})
	t.Run("nil token", func(t *testing.T) {
		s := &Store{Pool: pool, Table: testTable(t, pool)}
		if err := s.Save(ctx, nil); err == nil {
			t.Error("Save(nil) = nil; want an error")
		}
	})
}

// A replica that adopts a short-lived token another replica stored knows
// its lifetime, so with the default EarlyRefresh it does not refresh it
// again at once: one POST, not one per replica.
func TestAdoptedTokenKeepsLifetime(t *testing.T) {
	t.Parallel()
	pool := testPool(t, 0)
	table := testTable(t, pool)
	ctx := testContext(t)
	var posts atomic.Int32
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := posts.Add(1)
		w.Header().Set("Content-Type", "application/json")
		// 60 s: shorter than twice the default EarlyRefresh (5 min), so
		// a TokenSource refreshes it after half its lifetime, if it
		// knows the lifetime; else the 5-minute window covers it all.
		fmt.Fprintf(w, `{"access_token":"at-%d","token_type":"Bearer","refresh_token":"rt-%d","expires_in":60}`, n+1, n+1)
	}))
	defer ts.Close()
	key := randomName("grant-")
	if err := (&Store{Pool: pool, Table: table, Key: key}).Save(ctx, &oauth2.Token{AccessToken: "at-1", RefreshToken: "rt-1", Expiry: time.Now().Add(-time.Minute)}); err != nil {
		t.Fatal(err)
	}
	var got []string
	for range 3 { // three replicas, one after the other
		src := &pandadocauth.TokenSource{
			Config: &pandadocauth.Config{ClientID: "id", ClientSecret: "secret", TokenURL: ts.URL, HTTPClient: ts.Client()},
			Store:  &Store{Pool: pool, Table: table, Key: key},
		}
		tok, err := src.TokenContext(ctx)
		src.Wait() // a background early refresh, if one started
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, tok.AccessToken)
	}
	if n := posts.Load(); n != 1 {
		t.Errorf("%d token requests for replicas %v; want 1: an adopted token's lifetime was lost", n, got)
	}
}

package pgstore

import (
	"crypto/rand"
	"errors"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"
)

func TestEncryption(t *testing.T) {
	t.Parallel()
	pool := testPool(t, 0)
	table := testTable(t, pool)
	ctx := testContext(t)
	key := make([]byte, 32)
	rand.Read(key)
	tok := &oauth2.Token{AccessToken: "secret-access-token", TokenType: "Bearer", RefreshToken: "secret-refresh-token", Expiry: time.Now().Add(time.Hour)}

	s := &Store{Pool: pool, Table: table, Key: "enc", EncryptionKey: key}
	if err := s.Save(ctx, tok); err != nil {
		t.Fatal(err)
	}
	var access, refresh string
	if err := pool.QueryRow(ctx, `SELECT access_token, refresh_token FROM `+table+` WHERE key = 'enc'`).Scan(&access, &refresh); err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{access, refresh} {
		if strings.Contains(v, "secret") || !strings.HasPrefix(v, sealedPrefix) {
			t.Errorf("stored value %q is not sealed", v)
		}
	}
	got, err := s.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	assertToken(t, got, tok)

	// Each Save seals with a fresh nonce.
	if err := s.Save(ctx, tok); err != nil {
		t.Fatal(err)
	}
	var access2 string
	if err := pool.QueryRow(ctx, `SELECT access_token FROM `+table+` WHERE key = 'enc'`).Scan(&access2); err != nil {
		t.Fatal(err)
	}
	if access2 == access {
		t.Error("two Saves of one token stored the same ciphertext")
	}

	checkErr := func(t *testing.T, err error, want string) {
		t.Helper()
		if err == nil || !strings.HasPrefix(err.Error(), "pgstore: ") || !strings.Contains(err.Error(), want) {
			t.Fatalf("err = %v; want a pgstore error about %q", err, want)
		}
		if strings.Contains(err.Error(), "secret") {
			t.Errorf("error %q contains a token", err)
		}
	}
	t.Run("no key", func(t *testing.T) {
		_, err := (&Store{Pool: pool, Table: table, Key: "enc"}).Load(ctx)
		checkErr(t, err, "encrypted")
		if !errors.Is(err, ErrEncrypted) {
			t.Errorf("errors.Is(%v, ErrEncrypted) = false", err)
		}
	})
	t.Run("wrong key", func(t *testing.T) {
		other := make([]byte, 32)
		rand.Read(other)
		_, err := (&Store{Pool: pool, Table: table, Key: "enc", EncryptionKey: other}).Load(ctx)
		checkErr(t, err, "decrypting")
	})
	t.Run("row moved to another key", func(t *testing.T) {
		if _, err := pool.Exec(ctx, `INSERT INTO `+table+` (key, access_token, token_type, refresh_token, expiry)
			SELECT 'moved', access_token, token_type, refresh_token, expiry FROM `+table+` WHERE key = 'enc'`); err != nil {
			t.Fatal(err)
		}
		_, err := (&Store{Pool: pool, Table: table, Key: "moved", EncryptionKey: key}).Load(ctx)
		checkErr(t, err, "decrypting")
	})
	t.Run("bad key size", func(t *testing.T) {
		bad := &Store{Pool: pool, Table: table, Key: "enc", EncryptionKey: []byte("short")}
		_, err := bad.Load(ctx)
		checkErr(t, err, "EncryptionKey")
		checkErr(t, bad.Save(ctx, tok), "EncryptionKey")
	})
	t.Run("plaintext row read with a key", func(t *testing.T) {
		plain := &Store{Pool: pool, Table: table, Key: "plain"}
		if err := plain.Save(ctx, tok); err != nil {
			t.Fatal(err)
		}
		got, err := (&Store{Pool: pool, Table: table, Key: "plain", EncryptionKey: key}).Load(ctx)
		if err != nil {
			t.Fatal(err)
		}
		assertToken(t, got, tok)
	})
}

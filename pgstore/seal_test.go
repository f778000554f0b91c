package pgstore

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
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
		// The first Load fails, even with nothing or only plain text
		// stored, and so does CreateTable: a key that cannot seal is
		// found at start-up, not at the first Save.
		for _, s := range []*Store{
			{Pool: pool, Table: table, Key: "enc", EncryptionKey: []byte("secret-short")},
			{Pool: pool, Table: table, Key: "nothing-stored", EncryptionKey: []byte("secret-short")},
			{Pool: pool, Table: table, Key: "nothing-stored", EncryptionKey: key, EncryptionKeys: []AESKey{[]byte("secret-short")}},
		} {
			_, err := s.Load(ctx)
			checkErr(t, err, "key")
			checkErr(t, s.CreateTable(ctx), "key")
			checkErr(t, s.Save(ctx, tok), "key")
		}
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

// Rotation: seal with EncryptionKey, open with it or any of
// EncryptionKeys.
func TestKeyRotation(t *testing.T) {
	t.Parallel()
	pool := testPool(t, 0)
	table := testTable(t, pool)
	ctx := testContext(t)
	oldKey, newKey := make([]byte, 32), make([]byte, 32)
	rand.Read(oldKey)
	rand.Read(newKey)
	tok := &oauth2.Token{AccessToken: "secret-access-token", RefreshToken: "secret-refresh-token", Expiry: time.Now().Add(time.Hour)}

	if err := (&Store{Pool: pool, Table: table, Key: "g", EncryptionKey: oldKey}).Save(ctx, tok); err != nil {
		t.Fatal(err)
	}
	// Step 1: every replica can open with the new key too.
	step1 := &Store{Pool: pool, Table: table, Key: "g", EncryptionKey: oldKey, EncryptionKeys: []AESKey{newKey}}
	got, err := step1.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	assertToken(t, got, tok)
	// Step 2: seal with the new key, still open the old one.
	step2 := &Store{Pool: pool, Table: table, Key: "g", EncryptionKey: newKey, EncryptionKeys: []AESKey{oldKey}}
	got, err = step2.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	assertToken(t, got, tok)
	if err := step2.Save(ctx, got); err != nil {
		t.Fatal(err)
	}
	// Step 3: the old key is no longer needed, and no longer opens.
	step3 := &Store{Pool: pool, Table: table, Key: "g", EncryptionKey: newKey}
	got, err = step3.Load(ctx)
	if err != nil {
		t.Fatalf("Load with the new key only, after a Save with it first: %v", err)
	}
	assertToken(t, got, tok)
	if _, err := (&Store{Pool: pool, Table: table, Key: "g", EncryptionKey: oldKey}).Load(ctx); err == nil {
		t.Error("the old key opened a token saved after rotation")
	}
	// EncryptionKeys alone: the first seals.
	only := &Store{Pool: pool, Table: table, Key: "g", EncryptionKeys: []AESKey{oldKey, newKey}}
	if err := only.Save(ctx, tok); err != nil {
		t.Fatal(err)
	}
	if _, err := (&Store{Pool: pool, Table: table, Key: "g", EncryptionKey: oldKey}).Load(ctx); err != nil {
		t.Errorf("sealed with EncryptionKeys[0]? Load with it: %v", err)
	}
}

// The keys never show: not in fmt, encoding/json or log/slog output of
// a Store.
func TestKeyRedacted(t *testing.T) {
	t.Parallel()
	k := []byte("0123456789-SECRET-KEY-0123456789")
	s := &Store{Key: "g", EncryptionKey: k, EncryptionKeys: []AESKey{k}}
	type config struct {
		Store *Store
	}
	var out []string
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%x", "%q"} {
		out = append(out, fmt.Sprintf(verb, s), fmt.Sprintf(verb, config{s}), fmt.Sprintf(verb, s.EncryptionKey))
	}
	js, err := json.Marshal(config{s})
	if err != nil {
		t.Fatal(err)
	}
	out = append(out, string(js))
	var buf bytes.Buffer
	slog.New(slog.NewTextHandler(&buf, nil)).Info("m", "store", s, "config", config{s})
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("m", "store", s, "config", config{s})
	out = append(out, buf.String())
	for _, o := range out {
		if strings.Contains(o, "SECRET") || strings.Contains(o, hex.EncodeToString([]byte("SECRET"))) || strings.Contains(o, "83 69 67 82") {
			t.Errorf("the key shows: %s", o)
		}
	}
}

package redisstore

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

	"github.com/redis/go-redis/v9"
	"golang.org/x/oauth2"
)

func TestEncryption(t *testing.T) {
	t.Parallel()
	rdb := testClient(t)
	ctx := testContext(t)
	oldKey, newKey := make([]byte, 32), make([]byte, 16)
	rand.Read(oldKey)
	rand.Read(newKey)
	tok := &oauth2.Token{AccessToken: "secret-access-token", TokenType: "Bearer", RefreshToken: "secret-refresh-token", Expiry: time.Now().Add(time.Hour), ExpiresIn: 3600}

	s := testStore(t, rdb)
	s.EncryptionKey = oldKey
	if err := s.Save(ctx, tok); err != nil {
		t.Fatal(err)
	}
	tokenKey, _, _ := s.keys()
	raw := rdb.Get(ctx, tokenKey).Val()
	if strings.Contains(raw, "secret") || strings.Count(raw, sealedPrefix) != 2 {
		t.Errorf("stored value %s is not sealed", raw)
	}
	got, err := s.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	assertToken(t, got, tok)

	check := func(t *testing.T, err error, want string) {
		t.Helper()
		if err == nil || !strings.HasPrefix(err.Error(), "redisstore: ") || !strings.Contains(err.Error(), want) {
			t.Fatalf("err = %v; want a redisstore error about %q", err, want)
		}
		if strings.Contains(err.Error(), "secret") {
			t.Errorf("error %q contains a secret", err)
		}
	}
	t.Run("no key", func(t *testing.T) {
		_, err := (&Store{Client: rdb, Key: s.Key}).Load(ctx)
		check(t, err, "encrypted")
		if !errors.Is(err, ErrEncrypted) {
			t.Errorf("errors.Is(%v, ErrEncrypted) = false", err)
		}
	})
	t.Run("wrong key", func(t *testing.T) {
		_, err := (&Store{Client: rdb, Key: s.Key, EncryptionKey: newKey}).Load(ctx)
		check(t, err, "decrypting")
	})
	t.Run("moved to another grant", func(t *testing.T) {
		other := testStore(t, rdb)
		otherKey, _, _ := other.keys()
		rdb.Set(ctx, otherKey, raw, 0)
		other.EncryptionKey = oldKey
		_, err := other.Load(ctx)
		check(t, err, "decrypting")
	})
	t.Run("bad key size", func(t *testing.T) {
		// Fails from the first Load, with nothing stored too.
		for _, bad := range []*Store{
			{Client: rdb, Key: s.Key, EncryptionKey: []byte("secret-short")},
			{Client: rdb, Key: randomName("empty-"), EncryptionKeys: []AESKey{oldKey, []byte("secret-short")}},
		} {
			_, err := bad.Load(ctx)
			check(t, err, "key")
			check(t, bad.Save(ctx, tok), "key")
		}
	})
	t.Run("rotation", func(t *testing.T) {
		rotated := &Store{Client: rdb, Key: s.Key, EncryptionKey: newKey, EncryptionKeys: []AESKey{oldKey}}
		got, err := rotated.Load(ctx)
		if err != nil {
			t.Fatal(err)
		}
		assertToken(t, got, tok)
		if err := rotated.Save(ctx, got); err != nil {
			t.Fatal(err)
		}
		if got, err := (&Store{Client: rdb, Key: s.Key, EncryptionKey: newKey}).Load(ctx); err != nil {
			t.Fatalf("Load with the new key alone after a Save: %v", err)
		} else {
			assertToken(t, got, tok)
		}
	})
	t.Run("plain value read with a key", func(t *testing.T) {
		plain := testStore(t, rdb)
		if err := plain.Save(ctx, tok); err != nil {
			t.Fatal(err)
		}
		got, err := (&Store{Client: rdb, Key: plain.Key, EncryptionKey: newKey}).Load(ctx)
		if err != nil {
			t.Fatal(err)
		}
		assertToken(t, got, tok)
	})
}

// Neither the keys nor the client's password show in fmt, encoding/json
// or log/slog output of a Store.
func TestRedacted(t *testing.T) {
	t.Parallel()
	k := []byte("0123456789-SECRET-KEY-0123456789")
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", Password: "SECRET-PASSWORD", MaintNotificationsConfig: noMaint})
	defer rdb.Close()
	s := &Store{Client: rdb, Key: "g", EncryptionKey: k, EncryptionKeys: []AESKey{k}}
	type config struct {
		Store *Store
		Key   AESKey
	}
	var out []string
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%x", "%q"} {
		out = append(out, fmt.Sprintf(verb, s), fmt.Sprintf(verb, config{s, k}))
	}
	js, err := json.Marshal(config{s, k})
	if err != nil {
		t.Fatal(err)
	}
	out = append(out, string(js))
	var buf bytes.Buffer
	slog.New(slog.NewTextHandler(&buf, nil)).Info("m", "store", s, "config", config{s, k})
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("m", "store", s, "config", config{s, k})
	out = append(out, buf.String())
	for _, o := range out {
		if strings.Contains(o, "SECRET") || strings.Contains(o, hex.EncodeToString([]byte("SECRET"))) || strings.Contains(o, "83 69 67 82") {
			t.Errorf("a secret shows: %s", o)
		}
	}
}

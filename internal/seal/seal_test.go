package seal

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

const prefix = "test-aes-gcm:v1:"

func key(t *testing.T, n int) []byte {
	t.Helper()
	k := make([]byte, n)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return k
}

func TestSealOpen(t *testing.T) {
	t.Parallel()
	ad := []byte("grant\x00field")
	for _, n := range []int{16, 24, 32} {
		s, err := New(prefix, key(t, n))
		if err != nil {
			t.Fatal(err)
		}
		v, err := s.Seal("secret-token", ad)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(v, prefix) || strings.Contains(v, "secret") {
			t.Fatalf("Seal = %q; want a sealed value", v)
		}
		v2, _ := s.Seal("secret-token", ad)
		if v2 == v {
			t.Error("two Seals of one value are equal: the nonce is not fresh")
		}
		got, err := s.Open(v, ad)
		if err != nil || got != "secret-token" {
			t.Fatalf("Open = %q, %v", got, err)
		}
		if _, err := s.Open(v, []byte("other")); !errors.Is(err, ErrWrongKey) {
			t.Errorf("Open with other additional data: %v; want ErrWrongKey", err)
		}
		if got, err := s.Seal("", ad); got != "" || err != nil {
			t.Errorf("Seal(\"\") = %q, %v", got, err)
		}
	}
}

func TestRotation(t *testing.T) {
	t.Parallel()
	old, cur := key(t, 32), key(t, 16)
	before, _ := New(prefix, old)
	sealedOld, err := before.Seal("secret-token", nil)
	if err != nil {
		t.Fatal(err)
	}
	// Seal with the first key, open with any.
	after, err := New(prefix, cur, old)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := after.Open(sealedOld, nil); err != nil || got != "secret-token" {
		t.Fatalf("Open of a value sealed with the second key = %q, %v", got, err)
	}
	sealedNew, _ := after.Seal("secret-token", nil)
	if _, err := before.Open(sealedNew, nil); !errors.Is(err, ErrWrongKey) {
		t.Errorf("the old key opened a value sealed after rotation (%v): Seal did not use the first key", err)
	}
	onlyNew, _ := New(prefix, cur)
	if got, err := onlyNew.Open(sealedNew, nil); err != nil || got != "secret-token" {
		t.Errorf("Open with the new key alone = %q, %v", got, err)
	}
}

func TestNoKey(t *testing.T) {
	t.Parallel()
	s, err := New(prefix, nil, []byte{})
	if err != nil {
		t.Fatal(err)
	}
	if s.Encrypts() {
		t.Error("Encrypts() = true without keys")
	}
	if got, err := s.Seal("plain", nil); got != "plain" || err != nil {
		t.Errorf("Seal without keys = %q, %v", got, err)
	}
	if got, err := s.Open("plain", nil); got != "plain" || err != nil {
		t.Errorf("Open of a plain value = %q, %v", got, err)
	}
	if _, err := s.Open(prefix+"AAAA", nil); !errors.Is(err, ErrNoKey) {
		t.Errorf("Open of a sealed value without keys: %v; want ErrNoKey", err)
	}
}

func TestBadInput(t *testing.T) {
	t.Parallel()
	for _, n := range []int{1, 15, 31, 33, 64} {
		k := bytes.Repeat([]byte{'K'}, n)
		_, err := New(prefix, key(t, 16), k)
		if err == nil {
			t.Fatalf("%d-byte key: no error", n)
		}
		if !strings.Contains(err.Error(), "key 2") || strings.Contains(err.Error(), "KKK") {
			t.Errorf("%d-byte key: error %q should name key 2 and not show it", n, err)
		}
	}
	s, _ := New(prefix, key(t, 32))
	for _, v := range []string{prefix + "!!!", prefix + "AAAA", prefix} {
		if _, err := s.Open(v, nil); !errors.Is(err, ErrMalformed) {
			t.Errorf("Open(%q) = %v; want ErrMalformed", v, err)
		}
	}
}

func TestKeyRedacted(t *testing.T) {
	t.Parallel()
	k := Key("0123456789abcdef-SECRET-KEY-0123")
	type holder struct {
		Keys []Key
		Key  Key
	}
	h := holder{Keys: []Key{k}, Key: k}
	var out []string
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%x", "%X", "%q", "%d"} {
		out = append(out, fmt.Sprintf(verb, k), fmt.Sprintf(verb, h), fmt.Sprintf(verb, &h))
	}
	js, err := json.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}
	out = append(out, string(js))
	var buf bytes.Buffer
	slog.New(slog.NewTextHandler(&buf, nil)).Info("m", "key", k, "holder", h)
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("m", "key", k, "holder", h)
	out = append(out, buf.String())
	for _, o := range out {
		if strings.Contains(o, "SECRET") || strings.Contains(o, "5345435245") || strings.Contains(o, "83 69 67") || !strings.Contains(o, "REDACTED") {
			t.Errorf("key not redacted: %s", o)
		}
	}
}

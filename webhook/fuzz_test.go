package webhook_test

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/gopandadoc/pandadocauth/webhook"
)

// FuzzCheck feeds arbitrary bodies, signatures and keys to Check. It
// must never panic, accept only the body's own signature (in either
// case) under a non-empty key, always accept that signature, and say
// nothing about the key in its errors. Seeds live in
// testdata/fuzz/FuzzCheck; fuzz longer with
//
//	go test -run='^$' -fuzz=FuzzCheck -fuzztime=10m ./webhook
func FuzzCheck(f *testing.F) {
	f.Add([]byte(vectorBody), vectorSig, vectorKey)
	f.Fuzz(func(t *testing.T, body []byte, sig, key string) {
		want := webhook.Sign(key, body)
		err := webhook.Check(body, sig, key)
		if err == nil && (key == "" || !strings.EqualFold(sig, want)) {
			t.Fatalf("Check accepted signature %q under key %q; the signature is %s", sig, key, want)
		}
		if err != nil && !errors.Is(err, webhook.ErrNoKey) && !errors.Is(err, webhook.ErrNoSignature) && !errors.Is(err, webhook.ErrBadSignature) {
			t.Fatalf("Check = %v, not one of the sentinels", err)
		}
		if key == "" {
			if !errors.Is(err, webhook.ErrNoKey) {
				t.Fatalf("Check with an empty key = %v, want ErrNoKey", err)
			}
			return
		}
		for _, s := range []string{want, strings.ToUpper(want)} {
			if err := webhook.Check(body, s, key); err != nil {
				t.Fatalf("Check refused the body's own signature %s: %v", s, err)
			}
			if err := webhook.Check(body, s, "", key); err != nil {
				t.Fatalf("Check refused the body's own signature beside an empty key: %v", err)
			}
		}
		// The error does not depend on the key's content: another key
		// of the same length that does not match gives the same message.
		other := strings.Map(func(r rune) rune { return r ^ 1 }, key)
		if err != nil && !strings.EqualFold(sig, webhook.Sign(other, body)) {
			if err2 := webhook.Check(body, sig, other); err2 == nil || err2.Error() != err.Error() {
				t.Fatalf("errors differ with the key: %q and %q", err, err2)
			}
		}
	})
}

// FuzzParse feeds arbitrary bodies to Parse and the typed accessors.
// They must never panic; Parse fails only with ErrMalformed, and what it
// accepts encodes back to the same events; an accessor fails only, with
// ErrMalformed, on data that is not an object. Seeds live in
// testdata/fuzz/FuzzParse; fuzz longer with
//
//	go test -run='^$' -fuzz=FuzzParse -fuzztime=10m ./webhook
func FuzzParse(f *testing.F) {
	f.Add([]byte(stateChanged))
	f.Fuzz(func(t *testing.T, body []byte) {
		events, err := webhook.Parse(body)
		if err != nil {
			if !errors.Is(err, webhook.ErrMalformed) || events != nil {
				t.Fatalf("Parse = %v, %v", events, err)
			}
			return
		}
		again, err := json.Marshal(events)
		if err != nil {
			t.Fatalf("encoding what Parse returned: %v", err)
		}
		back, err := webhook.Parse(again)
		if err != nil || len(back) != len(events) {
			t.Fatalf("Parse of %s = %d events, %v; want %d", again, len(back), err, len(events))
		}
		for i, e := range events {
			if back[i].Event != e.Event {
				t.Fatalf("event %d: type %q, then %q", i, e.Event, back[i].Event)
			}
			isObject := json.Valid(e.Data) && strings.HasPrefix(strings.TrimLeft(string(e.Data), " \t\r\n"), "{")
			d, derr := e.Document()
			tpl, terr := e.Template()
			c, cerr := e.ContentLibraryItem()
			for _, err := range []error{derr, terr, cerr} {
				if isObject && err != nil || !isObject && !errors.Is(err, webhook.ErrMalformed) {
					t.Fatalf("event %d, data %s: accessor error %v", i, e.Data, err)
				}
			}
			if isObject && (!reflect.DeepEqual(d.Raw, e.Data) || !reflect.DeepEqual(tpl.Raw, e.Data) || !reflect.DeepEqual(c.Raw, e.Data)) {
				t.Fatalf("event %d: Raw is not the data", i)
			}
		}
	})
}

package pgstore

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
)

// sealedPrefix marks a value sealed with EncryptionKey, followed by
// base64 of nonce and ciphertext.
const sealedPrefix = "pgstore-aes-gcm:v1:"

// ErrEncrypted means the stored token is encrypted and the Store has no
// EncryptionKey to open it.
var ErrEncrypted = errors.New("the stored token is encrypted and Store.EncryptionKey is not set")

// aead returns the AES-GCM cipher of EncryptionKey, nil without one.
func (s *Store) aead() (cipher.AEAD, error) {
	if len(s.EncryptionKey) == 0 {
		return nil, nil
	}
	block, err := aes.NewCipher(s.EncryptionKey)
	if err != nil {
		return nil, fmt.Errorf("pgstore: Store.EncryptionKey: %w", err)
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("pgstore: Store.EncryptionKey: %w", err)
	}
	return gcm, nil
}

// additionalData binds a sealed value to its grant and column, so that
// it cannot be moved to another row or column.
func (s *Store) additionalData(column string) []byte {
	return []byte("pandadocauth/pgstore\x00" + column + "\x00" + s.Key)
}

// seal encrypts v for column when an EncryptionKey is set. Empty values
// stay empty.
func (s *Store) seal(v, column string) (string, error) {
	gcm, err := s.aead()
	if err != nil || gcm == nil || v == "" {
		return v, err
	}
	nonce := make([]byte, gcm.NonceSize(), gcm.NonceSize()+len(v)+gcm.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return "", fmt.Errorf("pgstore: encrypting token: %w", err)
	}
	out := gcm.Seal(nonce, nonce, []byte(v), s.additionalData(column))
	return sealedPrefix + base64.RawStdEncoding.EncodeToString(out), nil
}

// open reverses seal. Values stored without encryption are returned as
// they are.
func (s *Store) open(v, column string) (string, error) {
	rest, sealed := strings.CutPrefix(v, sealedPrefix)
	if !sealed {
		return v, nil
	}
	gcm, err := s.aead()
	if err != nil {
		return "", err
	}
	if gcm == nil {
		return "", fmt.Errorf("pgstore: loading token: %w", ErrEncrypted)
	}
	b, err := base64.RawStdEncoding.DecodeString(rest)
	if err != nil || len(b) < gcm.NonceSize() {
		return "", fmt.Errorf("pgstore: loading token: %s is not a sealed value", column)
	}
	plain, err := gcm.Open(nil, b[:gcm.NonceSize()], b[gcm.NonceSize():], s.additionalData(column))
	if err != nil {
		return "", fmt.Errorf("pgstore: loading token: decrypting %s (wrong Store.EncryptionKey, or a row moved from another key): %w", column, err)
	}
	return string(plain), nil
}

package testserver

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
)

func startRedis() (started, error) {
	if !supported {
		return started{}, fmt.Errorf("starting Redis on this system: %w", errNotInstalled)
	}
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return started{}, fmt.Errorf("redis-server: %w", errNotInstalled)
	}
	dir, err := tempDir("pandadocauth-redis-", nil)
	if err != nil {
		return started{}, err
	}
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		os.RemoveAll(dir)
		return started{}, err
	}
	password := hex.EncodeToString(b)
	socket := filepath.Join(dir, "redis.sock")
	// The password goes in a file, not on the command line, where ps
	// would show it. A Unix socket and no TCP port; nothing saved.
	conf := "port 0\n" +
		"unixsocket " + strconv.Quote(socket) + "\n" +
		"unixsocketperm 700\n" +
		"dir " + strconv.Quote(dir) + "\n" +
		"save \"\"\n" +
		"appendonly no\n" +
		"requirepass " + password + "\n"
	confPath := filepath.Join(dir, "redis.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		os.RemoveAll(dir)
		return started{}, err
	}
	srv := exec.Command(bin, confPath)
	srv.Dir = dir
	srv.SysProcAttr = sysProcAttr(nil, syscall.SIGKILL)
	// "Ready to accept connections" (Redis 6), "The server is now
	// ready to accept connections at" its socket (7.0), "Ready to accept
	// connections unix" (7.2).
	p, err := startProcess(srv, "ready to accept connections")
	if err != nil {
		os.RemoveAll(dir)
		return started{}, err
	}
	return started{
		env: map[string]string{RedisAddrEnv: socket, RedisPasswordEnv: password},
		halt: func() {
			p.halt(syscall.SIGTERM)
			os.RemoveAll(dir)
		},
	}, nil
}

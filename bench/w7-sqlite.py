"""W7, app state in SQLite: make the database (make DIR ROWS), or change it as an app would
(run DIR OPS): random updates, inserts and deletes in 40 transactions with Python's sqlite3
and its default rollback journal, then an integrity check. Prints the seconds of the changes."""
import os, random, sqlite3, sys, time

def make(dir, rows):
    os.makedirs(dir, exist_ok=True)
    path = os.path.join(dir, 'state.db')
    if os.path.exists(path):
        os.remove(path)
    random.seed(1)
    db = sqlite3.connect(path)
    db.execute('create table kv (id integer primary key, k text unique, v blob)')
    db.executemany('insert into kv values (?, ?, ?)', ((i, f'key-{i:08d}', random.randbytes(100)) for i in range(rows)))
    db.commit()
    db.close()

def run(dir, ops):
    random.seed(2)
    db = sqlite3.connect(os.path.join(dir, 'state.db'))
    rows = db.execute('select max(id) from kv').fetchone()[0]
    started = time.time()
    for _ in range(40):
        with db:
            for _ in range(ops // 40):
                op = random.random()
                if op < 0.6:
                    db.execute('update kv set v = ? where id = ?', (random.randbytes(100), random.randrange(rows)))
                elif op < 0.85:
                    db.execute('insert or replace into kv (k, v) values (?, ?)', (f'new-{random.random()}', random.randbytes(120)))
                else:
                    db.execute('delete from kv where id = ?', (random.randrange(rows),))
    elapsed = time.time() - started
    if db.execute('pragma integrity_check').fetchone()[0] != 'ok':
        sys.exit('integrity_check failed')
    print(f'{elapsed:.3f}')

if __name__ == '__main__':
    (make if sys.argv[1] == 'make' else run)(sys.argv[2], int(sys.argv[3]))

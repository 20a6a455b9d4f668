fn main() {
    let dir = std::env::args().nth(1).unwrap();
    for (i, s) in postern_ipc::fuzzing::seeds().into_iter().enumerate() {
        std::fs::write(format!("{dir}/seed-{i}"), s).unwrap();
    }
}

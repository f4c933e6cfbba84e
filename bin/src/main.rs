fn main() {
    println!("walship");
}
